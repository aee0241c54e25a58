"""The lifecycle every loopback test server shares: a threaded HTTP server on a free port of 127.0.0.1."""

from __future__ import annotations

import http.server
import threading
from types import TracebackType
from typing import Self


class LoopbackServer:
    """Subclasses build their request handler class, then call `_serve(handler, name)` in `__init__`."""

    _server: http.server.ThreadingHTTPServer
    _thread: threading.Thread

    def _serve(self, handler: type[http.server.BaseHTTPRequestHandler], name: str, port: int = 0) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
