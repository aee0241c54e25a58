"""A loopback forwarder in front of a real token endpoint that can hold refresh requests.

Point a connection's ``token_url`` at ``proxy.url``: every request is forwarded to the upstream token
endpoint and its answer relayed, except that while ``hold_refreshes`` is on, a ``refresh_token`` grant
is held (not forwarded) until the test decides: ``release`` forwards it, ``drop`` closes the
connection without forwarding it, so the upstream provider never learns of it.

A held request knows the client's address, so the test can find the process that sent it.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

import requests

from tests.support.loopback import LoopbackServer

_FORWARDED_REQUEST_HEADERS = ("Content-Type", "Authorization", "Accept")
_RELAYED_RESPONSE_HEADERS = ("Content-Type", "Cache-Control", "Pragma", "Retry-After", "WWW-Authenticate")
_DECISION_TIMEOUT = 60.0


@dataclass
class HeldRequest:
    form: dict[str, str]
    client_host: str
    client_port: int
    decided: threading.Event = field(default_factory=threading.Event)
    action: Literal["forward", "drop"] | None = None


class HoldingTokenProxy(LoopbackServer):
    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.hold_refreshes = False
        self.forwarded: list[str] = []  # grant types, in the order they were forwarded upstream
        self.dropped: list[HeldRequest] = []
        # Called with the grant type once the upstream answered and before the answer is relayed.
        self.on_answer: Callable[[str], None] | None = None
        self._held: list[HeldRequest] = []
        self._arrived = threading.Condition()
        self._upstream = requests.Session()
        self._upstream.trust_env = False
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
                if form.get("grant_type") == "refresh_token" and owner.hold_refreshes:
                    held = HeldRequest(form, str(self.client_address[0]), int(self.client_address[1]))
                    with owner._arrived:
                        owner._held.append(held)
                        owner._arrived.notify_all()
                    if not held.decided.wait(_DECISION_TIMEOUT) or held.action != "forward":
                        self.close_connection = True  # no answer, nothing forwarded
                        return
                owner._forward(self, form.get("grant_type", ""), body)

            def log_message(self, *args: object) -> None:
                pass

        self._serve(Handler, "token-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def forwarded_count(self, grant_type: str) -> int:
        return self.forwarded.count(grant_type)

    def wait_for_held(self, timeout: float) -> HeldRequest:
        """The first held request that is still undecided, waiting up to ``timeout`` seconds for one."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: any(h.action is None for h in self._held), timeout):
                raise TimeoutError(f"no refresh request reached the proxy within {timeout} s")
            return next(h for h in self._held if h.action is None)

    def release(self, held: HeldRequest) -> None:
        held.action = "forward"
        held.decided.set()

    def drop(self, held: HeldRequest) -> None:
        held.action = "drop"
        self.dropped.append(held)
        held.decided.set()

    def _forward(self, handler: http.server.BaseHTTPRequestHandler, grant_type: str, body: bytes) -> None:
        headers = {name: handler.headers[name] for name in _FORWARDED_REQUEST_HEADERS if handler.headers[name]}
        self.forwarded.append(grant_type)
        upstream = self._upstream.post(self.upstream_url, data=body, headers=headers, timeout=30, allow_redirects=False)
        if self.on_answer is not None:
            self.on_answer(grant_type)
        handler.send_response(upstream.status_code)
        for name in _RELAYED_RESPONSE_HEADERS:
            if name in upstream.headers:
                handler.send_header(name, upstream.headers[name])
        handler.send_header("Content-Length", str(len(upstream.content)))
        handler.end_headers()
        handler.wfile.write(upstream.content)

    def stop(self) -> None:
        for held in list(self._held):
            if held.action is None:
                self.drop(held)
        super().stop()
        self._upstream.close()
