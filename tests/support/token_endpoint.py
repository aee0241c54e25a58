"""A scripted token endpoint on loopback: tests queue the answers a misbehaving provider would give.

Each queued answer is a `Scripted` (status, headers, body, delay), an `Endless` body, or RESET (the
connection is dropped without an answer). Every request (POST, or GET for metadata) is recorded with its
body (form fields, or the object of a JSON body) and headers. `json_only` answers a form-encoded token
request with HTTP 415, as a JSON-only provider does. `verify` may refuse a request before the script
answers (a provider checking a client assertion, say).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from tests.support.loopback import LoopbackServer


@dataclass
class Scripted:
    status: int = 200
    body: str | bytes | dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # Run once the answer is decided and before it is sent (e.g. to start a fault at that moment).
    on_answer: Callable[[], None] | None = None

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, dict):
            return json.dumps(self.body).encode(), "application/json"
        data = self.body.encode() if isinstance(self.body, str) else self.body
        return data, self.headers.get("Content-Type", "text/plain")


@dataclass
class Endless:
    """200 with a chunked body that never ends: it stops only when the client hangs up (or after `cap`
    bytes, breaking off without the last chunk). `sent` counts the body bytes that went out."""

    content_type: str = "application/json"
    cap: int = 64 * 1024 * 1024
    sent: int = 0


RESET = object()
ENDLESS_CHUNK = b'{"access_token": "' + b"a" * (64 * 1024 - 18)


@dataclass
class Recorded:
    path: str
    form: dict[str, Any]
    headers: dict[str, str]
    is_json: bool = False


class ScriptedTokenEndpoint(LoopbackServer):
    def __init__(self) -> None:
        self.answers: deque[Scripted | object] = deque()
        self.requests: list[Recorded] = []
        self.default: Scripted | object = Scripted(500, {"error": "server_error"})
        self.json_only = False
        self.verify: Callable[[Recorded], Scripted | None] | None = None
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                is_json = (self.headers.get("Content-Type") or "").startswith("application/json")
                form = json.loads(body) if is_json else dict(parse_qsl(body))
                recorded = Recorded(self.path, form, dict(self.headers.items()), is_json)
                owner.requests.append(recorded)
                refusal = owner.verify(recorded) if owner.verify is not None else None
                if refusal is not None:
                    answer: Scripted | object = refusal
                elif owner.json_only and self.command == "POST" and not is_json:
                    answer = Scripted(415, {"error": "invalid_request"})
                else:
                    answer = owner.answers.popleft() if owner.answers else owner.default
                if answer is RESET:
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(answer, Endless):
                    self._endless(answer)
                    return
                assert isinstance(answer, Scripted)
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.on_answer is not None:
                    answer.on_answer()
                data, content_type = answer.encoded()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.headers.get("Content-Type", content_type))
                for name, value in answer.headers.items():
                    if name != "Content-Type":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            do_GET = do_POST

            def _endless(self, answer: Endless) -> None:
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    while answer.sent < answer.cap:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(ENDLESS_CHUNK), ENDLESS_CHUNK))
                        answer.sent += len(ENDLESS_CHUNK)

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler, "token-endpoint")

    def reset(self) -> None:
        """Forget what earlier tests queued and received: no answers, no requests, the default answer."""
        self.answers.clear()
        self.requests.clear()
        self.default = Scripted(500, {"error": "server_error"})
        self.json_only = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *answers: Scripted | object) -> None:
        self.answers.extend(answers)
