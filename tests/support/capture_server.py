"""A loopback server that stands in for someone else's host: it records every request and plays along.

It answers like an authorization server of its own, so a service that trusted it would go on talking:
its issuer (`url`) serves a discovery document naming its own endpoints, `/token` answers with a
token, `/revoke` confirms, anything else is a 404. Every request is recorded whole (method, path,
headers, body), so a test can assert that no secret or token ever reached it.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass
from typing import Any

from tests.support.loopback import LoopbackServer

DISCOVERY_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


@dataclass(frozen=True)
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: str

    @property
    def raw(self) -> str:
        """Everything the request carried, for substring checks."""
        return f"{self.method} {self.path}\n{json.dumps(self.headers)}\n{self.body}"


class CaptureServer(LoopbackServer):
    def __init__(self) -> None:
        self.requests: list[Captured] = []
        self.discovered = {"authorization_url", "token_url", "revocation_url"}  # what its metadata names
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
                with owner._lock:
                    owner.requests.append(Captured(self.command, self.path, dict(self.headers.items()), body))
                status, answer = owner._reply(self.command, self.path.split("?")[0])
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self._serve(Handler, "capture-server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, field: str) -> str:
        """Where a connection's `field` would point to send it here."""
        return {
            "issuer": self.url,
            "authorization_url": f"{self.url}/authorize",
            "token_url": f"{self.url}/token",
            "revocation_url": f"{self.url}/revoke",
        }[field]

    def _reply(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path in DISCOVERY_PATHS:
            names = {"authorization_url": "authorization", "token_url": "token", "revocation_url": "revocation"}
            metadata = {f"{names[field]}_endpoint": self.endpoint(field) for field in sorted(self.discovered)}
            return 200, {"issuer": self.url, "code_challenge_methods_supported": ["S256"], **metadata}
        if method == "POST" and path == "/token":
            return 200, {"access_token": "captured-access", "token_type": "Bearer", "expires_in": 3600}
        if method == "POST" and path == "/revoke":
            return 200, {}
        return 404, {"error": "not_found"}

    def received(self) -> list[Captured]:
        with self._lock:
            return list(self.requests)

    def beyond_discovery(self) -> list[Captured]:
        """The requests that could have carried a credential (discovery is a bare GET)."""
        return [r for r in self.received() if r.method != "GET" or r.path.split("?")[0] not in DISCOVERY_PATHS]
