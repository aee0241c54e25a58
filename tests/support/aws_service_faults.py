"""A forwarder in front of the embedded AWS that can take one service down for a while.

Point the SDKs at ``proxy.url`` (AWS_ENDPOINT_URL) and every request is relayed to the embedded AWS,
except that a service taken down (``take_down("dynamodb", seconds)``) has its connections reset
without an answer, as when its endpoint is unreachable, and a failing one (``fail_with``) answers the
service's own error shape (e.g. KMS's `DisabledException`). The service is read from the SigV4 credential
scope of each request, so no client needs to know about the proxy.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import socket
import struct
import threading
import time
from collections import Counter

import requests

from tests.support.loopback import LoopbackServer

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request")
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "content-encoding", "keep-alive", "host"}


class AwsFaultProxy(LoopbackServer):
    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.refused: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        self._down_until: dict[str, float] = {}
        self._errors: dict[str, tuple[float, int, str]] = {}
        self._lock = threading.Lock()
        self._upstream = requests.Session()
        self._upstream.trust_env = False
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                match = _SCOPE.search(self.headers.get("Authorization") or "")
                service = match.group(1) if match else "unknown"
                if owner.is_down(service):
                    with owner._lock:
                        owner.refused[service] += 1
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                error = owner.error_of(service)
                if error is not None:
                    status, data = error
                    with owner._lock:
                        owner.refused[service] += 1
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                with owner._lock:
                    owner.forwarded[service] += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                answer = owner._upstream.request(
                    self.command, owner.upstream_url + self.path, data=body, headers=headers, timeout=30
                )
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay

            def log_message(self, *args: object) -> None:
                pass

        self._serve(Handler, "aws-fault-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take_down(self, service: str, seconds: float) -> None:
        """Refuse every request to `service` (as named in SigV4, e.g. "dynamodb") for `seconds` from now."""
        with self._lock:
            self._down_until[service] = time.monotonic() + seconds

    def fail_with(self, service: str, seconds: float, status: int, error_type: str) -> None:
        """Answer every request to `service` with the service's own error shape, as it does when it refuses."""
        with self._lock:
            self._errors[service] = (time.monotonic() + seconds, status, error_type)

    def error_of(self, service: str) -> tuple[int, bytes] | None:
        with self._lock:
            until, status, error_type = self._errors.get(service, (0.0, 0, ""))
        if time.monotonic() >= until:
            return None
        return status, json.dumps({"__type": error_type, "message": f"{error_type} (injected)"}).encode()

    def is_down(self, service: str) -> bool:
        with self._lock:
            return time.monotonic() < self._down_until.get(service, 0.0)

    def stop(self) -> None:
        super().stop()
        self._upstream.close()
