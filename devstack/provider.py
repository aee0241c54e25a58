"""The demo OAuth2 provider (``provider/server.mjs``), started next to the stack when it is installed."""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack import config
from devstack.logs import LogSink


def provider_available(repo_root: Path) -> bool:
    provider = repo_root / "provider"
    return (
        (provider / "server.mjs").is_file()
        and (provider / "node_modules").is_dir()
        and config.node_executable() is not None
    )


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook: the child gets SIGTERM when the stack's process dies (Linux only)."""
    if threading.current_thread() is not threading.main_thread():
        return None  # PDEATHSIG follows the spawning thread, not the process
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl = getattr(libc, "prctl", None)
    if prctl is None:
        return None

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


class DemoProvider:
    def __init__(self, repo_root: Path, state_dir: Path, port: int, api_port: int, sink: LogSink) -> None:
        provider_dir = repo_root / "provider"
        settings: dict[str, Any] = {}
        source = provider_dir / "demo-config.json"
        if source.is_file():
            settings = json.loads(source.read_text(encoding="utf-8"))
        settings["port"] = port
        if api_port != config.DEFAULT_API_PORT:
            # The demo clients' redirect URIs name the default API port; follow the actual one.
            for client in settings.get("clients") or []:
                client["redirect_uris"] = [
                    uri.replace(f":{config.DEFAULT_API_PORT}/", f":{api_port}/")
                    for uri in client.get("redirect_uris") or []
                ]
        derived = state_dir / "provider-config.json"
        derived.write_text(json.dumps(settings, indent=2), encoding="utf-8")
        self.process = subprocess.Popen(
            [str(config.node_executable()), str(provider_dir / "server.mjs"), str(derived)],
            cwd=provider_dir,
            env={**os.environ, "PROVIDER_PORT": str(port)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        assert self.process.stdout is not None
        self.url = self._wait_for_url(self.process.stdout.fileno(), timeout=20)
        sink.pump("provider", self.process.stdout, echo=True)  # a few lines: its address, its warnings

    def _wait_for_url(self, descriptor: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([descriptor], [], [], 0.2)
            if ready:
                chunk = os.read(descriptor, 4096)
                if not chunk:
                    break
                seen += chunk
                for line in seen.decode(errors="replace").splitlines():
                    if "listening on " in line:
                        return line.split("listening on ", 1)[1].strip()
            elif self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"the demo provider did not start: {seen.decode(errors='replace').strip()}")

    def stop(self, grace: float = 3.0) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(grace)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
