"""Where the output of functions and helper processes goes: a file per source, and the console.

The console shows one human line per request, scheduled run and queue batch (``activity``) plus the
functions' warnings and errors; every line a function prints is in ``<log dir>/<source>.log``.
With ``all_logs`` the console streams every line as ``[source] line`` as well.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import IO, TextIO

ACTIVITY = "activity"
_NOTABLE_LEVELS = {"WARNING", "ERROR", "CRITICAL"}


def _notable(line: str) -> str | None:
    """The short console form of a line worth showing without ``all_logs``, else None."""
    if line.startswith("[devstack]"):
        return line
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or str(record.get("level", "")).upper() not in _NOTABLE_LEVELS:
        return None
    text = f"{str(record['level']).upper()} {record.get('message', '')}"
    code = record.get("error_code")
    return f"{text} ({code})" if code else text


def describe_outcome(ok: bool, payload: bytes) -> str:
    """A function's result in a few words: ``ok``, ``enqueued=3 shards=4``, ``error not_found``,
    ``failed Sandbox.Timedout``, ``2 item failures``. Never values beyond small numbers and codes:
    a result may hold a token."""
    try:
        result = json.loads(payload) if payload else None
    except ValueError:
        result = None
    if not ok:
        error_type = result.get("errorType") if isinstance(result, dict) else None
        return f"failed {error_type}" if error_type else "failed"
    if not isinstance(result, dict):
        return "ok"
    error = result.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return f"error {error['code']}"
    failures = result.get("batchItemFailures")
    if isinstance(failures, list):
        return f"{len(failures)} item failures" if failures else "ok"
    counts = [
        f"{name}={value}" for name, value in result.items() if isinstance(value, int) and not isinstance(value, bool)
    ]
    return " ".join(counts[:4]) if counts else "ok"


class LogSink:
    """Thread-safe line sink. Each source (a function's logical id, ``aws``, ``provider``) gets
    ``<log dir>/<source>.log``. With echo on, the console gets the activity lines and notable lines
    (or, with ``all_logs``, every line)."""

    def __init__(
        self, log_dir: Path, *, echo: bool = True, all_logs: bool = False, console: TextIO | None = None
    ) -> None:
        self.log_dir = log_dir
        self.echo = echo
        self.all_logs = all_logs
        self._console = console
        self._files: dict[str, IO[str]] = {}
        self._lock = threading.Lock()
        log_dir.mkdir(parents=True, exist_ok=True)
        for stale in log_dir.glob("*.log"):
            stale.unlink()

    def path(self, source: str) -> Path:
        return self.log_dir / f"{source}.log"

    def write(self, source: str, line: str, *, echo: bool | None = None) -> None:
        """Record a line. ``echo=False`` keeps it off the console; ``echo=True`` always shows it
        (when the sink echoes); the default shows it by the rule above."""
        line = line.rstrip("\r\n")
        shown: str | None = None
        if self.echo and echo is not False:
            shown = line if echo or self.all_logs else _notable(line)
        with self._lock:
            self._append(source, line)
            if shown is not None:
                self._show(f"[{source}] {shown}")

    def activity(self, line: str) -> None:
        """One human line about a request or a run: on the console and in ``activity.log``."""
        with self._lock:
            self._append(ACTIVITY, line)
            if self.echo:
                self._show(line)

    def _append(self, source: str, line: str) -> None:
        handle = self._files.get(source)
        if handle is None:
            handle = self._files[source] = self.path(source).open("a", encoding="utf-8")
        handle.write(line + "\n")
        handle.flush()

    def _show(self, text: str) -> None:
        console = self._console or sys.stdout
        try:
            console.write(text + "\n")
            console.flush()
        except (OSError, ValueError):
            pass  # a closed console must not break the stack

    def pump(self, source: str, stream: IO[bytes], *, echo: bool | None = None) -> threading.Thread:
        """Copy a child's output stream line by line until EOF, in a daemon thread."""

        def run() -> None:
            with stream:
                for raw in iter(stream.readline, b""):
                    self.write(source, raw.decode("utf-8", errors="replace"), echo=echo)

        thread = threading.Thread(target=run, name=f"log-{source}", daemon=True)
        thread.start()
        return thread

    def lines(self, sources: list[str] | None = None) -> list[str]:
        with self._lock:
            names = sources if sources is not None else sorted(self._files)
            result: list[str] = []
            for name in names:
                path = self.path(name)
                if path.exists():
                    result.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
            return result

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()
