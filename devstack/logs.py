"""Where the output of functions and helper processes goes: the console (prefixed) and a file per source."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import IO, TextIO


class LogSink:
    """Thread-safe line sink. Each source (a function's logical id, ``aws``, ``provider``) gets
    ``<log dir>/<source>.log``; lines are echoed to ``console`` as ``[source] line`` when echo is on."""

    def __init__(self, log_dir: Path, *, echo: bool = True, console: TextIO | None = None) -> None:
        self.log_dir = log_dir
        self.echo = echo
        self._console = console
        self._files: dict[str, IO[str]] = {}
        self._lock = threading.Lock()
        log_dir.mkdir(parents=True, exist_ok=True)
        for stale in log_dir.glob("*.log"):
            stale.unlink()

    def path(self, source: str) -> Path:
        return self.log_dir / f"{source}.log"

    def write(self, source: str, line: str, *, echo: bool | None = None) -> None:
        line = line.rstrip("\r\n")
        with self._lock:
            handle = self._files.get(source)
            if handle is None:
                handle = self._files[source] = self.path(source).open("a", encoding="utf-8")
            handle.write(line + "\n")
            handle.flush()
            if self.echo if echo is None else echo:
                console = self._console or sys.stdout
                try:
                    console.write(f"[{source}] {line}\n")
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
