"""A local API that answers from a script, for the call engine's tests: each path has a queue of steps."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Step:
    """One scripted answer. `stall` waits before answering; `endless` sends body bytes until the client leaves;
    `drip` sends a byte every `drip` seconds, forever."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stall: float = 0.0
    endless: bool = False
    drip: float = 0.0


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedApi:
    base: str
    routes: dict[str, list[Step]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    streamed_bytes: list[int] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def script(self, path: str, *steps: Step) -> str:
        self.routes[path] = list(steps)
        return f"{self.base}{path}"

    def next_step(self, path: str) -> Step:
        steps = self.routes.get(path.split("?")[0])
        if not steps:
            return Step(404)
        return steps.pop(0) if len(steps) > 1 else steps[0]

    @property
    def authorizations(self) -> list[str]:
        return [seen.headers.get("authorization", "") for seen in self.seen]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no delayed-ACK stall between them
    api: ClassVar[ScriptedApi]

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.api.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        step = self.api.next_step(self.path)
        if step.stall:
            self.api.release.wait(step.stall)
        self.send_response(step.status)
        for name, value in step.headers.items():
            self.send_header(name, value)
        if step.endless or step.drip:
            self.send_header("Connection", "close")
            self.end_headers()
            self._stream(step)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(step.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(step.body)

    def _stream(self, step: Step) -> None:
        sent = 0
        chunk = b"x" * (64 * 1024 if step.endless else 1)
        try:
            while not self.api.release.is_set() and sent < 1024**3:
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                if step.drip:
                    time.sleep(step.drip)
        except OSError:
            pass
        self.api.streamed_bytes.append(sent)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def scripted_api() -> Iterator[ScriptedApi]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    api = ScriptedApi(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = type("Handler", (_Handler,), {"api": api})
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield api
    finally:
        api.release.set()
        server.shutdown()
        server.server_close()
