"""A proxy in front of the embedded AWS that makes AWS, or one of its services, misbehave.

Point the SDKs at ``proxy.url`` (their ``AWS_ENDPOINT_URL``) and the proxy at the embedded AWS
(``forward_to``): every request is relayed unless a fault applies to its service, which is read from the
SigV4 credential scope ("dynamodb", "kms", "events", ...), so no client needs to know about the proxy.
``with proxy.fault(mode):`` applies a fault to every service until the block ends, ``with
proxy.fault(mode, "kms"):`` to one; ``take_down`` and ``fail_with`` apply one to a service for some
seconds from now, as a test does from inside a call it cannot wrap in a block:

* ``pass``: relayed unchanged;
* ``hang``: the request is read but never answered, and its connection closed when the fault ends (a
  paused process, a black-holed partition);
* ``refuse``: the connection is reset without an answer (an unreachable endpoint); for every service the
  port is closed as well, so new connections are refused (a process that is gone);
* ``slow``: every answer is held back ``SLOW_SECONDS``;
* ``throttle``: answered ``ThrottlingException`` (HTTP 400) without reaching AWS, as a JSON-protocol
  service answers when over its rate;
* ``fail_entries``: answered 200 with one failed entry (EventBridge's PutEvents);
* ``fail_with``: the service's own error shape, e.g. KMS's ``DisabledException``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import requests

from tests.support.loopback import LoopbackServer

type Mode = Literal["pass", "hang", "refuse", "slow", "throttle", "fail_entries"]

SLOW_SECONDS = 2.0
_POLL_SECONDS = 0.05
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request")
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "content-encoding", "keep-alive", "host"}
_ANSWER_HEADERS = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "aws-fault-proxy"}


def _error(error_type: str, message: str) -> bytes:
    return json.dumps({"__type": error_type, "message": message}).encode()


# Canned answers, given without reaching AWS.
_ANSWERS: dict[Mode, tuple[int, bytes]] = {
    "throttle": (400, _error("ThrottlingException", "Rate exceeded")),
    "fail_entries": (
        200,
        b'{"FailedEntryCount":1,"Entries":[{"ErrorCode":"InternalFailure","ErrorMessage":"try again"}]}',
    ),
}


@dataclass(frozen=True)
class _Fault:
    mode: Mode | Literal["answer"]
    until: float = math.inf
    answer: tuple[int, bytes] | None = None  # (status, body) given instead of AWS's


_PASS = _Fault("pass")


class AwsFaultProxy(LoopbackServer):
    def __init__(self, upstream_url: str = "") -> None:
        self._upstream_url = upstream_url.rstrip("/")
        self.seen: Counter[str] = Counter()  # every request received, per service
        self.refused: Counter[str] = Counter()  # requests kept from the embedded AWS, per service
        self._faults: dict[str | None, _Fault] = {}  # None: every service
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._upstream = requests.Session()
        self._upstream.trust_env = False
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                match = _SCOPE.search(self.headers.get("Authorization") or "")
                service = match.group(1) if match else "unknown"
                fault = owner._fault_of(service)
                with owner._lock:
                    owner.seen[service] += 1
                    if fault.mode not in ("pass", "slow"):
                        owner.refused[service] += 1
                if fault.mode == "hang":
                    while owner._fault_of(service).mode == "hang" and not owner._stopped.is_set():
                        time.sleep(_POLL_SECONDS)
                    self.close_connection = True
                elif fault.mode == "refuse":
                    self.close_connection = True
                    _reset(self.connection)
                elif fault.answer is not None:
                    self._answer(*fault.answer, _ANSWER_HEADERS)
                else:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    relayed = owner._upstream.request(
                        self.command, owner._upstream_url + self.path, data=body, headers=headers, timeout=30
                    )
                    if fault.mode == "slow":
                        time.sleep(SLOW_SECONDS)
                    kept = {k: v for k, v in relayed.headers.items() if k.lower() not in _HOP_BY_HOP}
                    self._answer(relayed.status_code, relayed.content, kept)

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay

            def log_message(self, *args: object) -> None:
                pass

        self._handler = Handler
        self._serve(Handler, "aws-fault-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def forward_to(self, url: str) -> None:
        """Relay to this upstream (the embedded AWS) from now on."""
        self._upstream_url = url.rstrip("/")

    @contextlib.contextmanager
    def fault(self, mode: Mode, service: str | None = None) -> Iterator[None]:
        """Misbehave as `mode` inside the block, for `service` (as named in SigV4) or every service."""
        closes_port = mode == "refuse" and service is None
        self._set(service, _Fault(mode, answer=_ANSWERS.get(mode)))
        if closes_port:
            LoopbackServer.stop(self)
        try:
            yield
        finally:
            self._set(service, _PASS)
            if closes_port:
                self._serve(self._handler, "aws-fault-proxy", self.port)
                self.start()

    def take_down(self, service: str, seconds: float) -> None:
        """Reset every request to `service` (e.g. "dynamodb") for `seconds` from now."""
        self._set(service, _Fault("refuse", time.monotonic() + seconds))

    def fail_with(self, service: str, seconds: float, status: int, error_type: str) -> None:
        """Answer every request to `service` with the service's own error shape, as it does when it refuses."""
        answer = (status, _error(error_type, f"{error_type} (injected)"))
        self._set(service, _Fault("answer", time.monotonic() + seconds, answer))

    def _fault_of(self, service: str) -> _Fault:
        """The fault in force for `service`: its own, else the one for every service."""
        now = time.monotonic()
        with self._lock:
            for key in (service, None):
                fault = self._faults.get(key, _PASS)
                if fault.mode != "pass" and now < fault.until:
                    return fault
        return _PASS

    def _set(self, service: str | None, fault: _Fault) -> None:
        with self._lock:
            self._faults[service] = fault

    def stop(self) -> None:
        self._stopped.set()
        super().stop()
        self._upstream.close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a vanished peer's kernel answers."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
