"""A loopback TCP proxy in front of the embedded AWS that can make AWS hang, refuse or answer slowly.

Point the functions' ``AWS_ENDPOINT_URL`` at ``proxy.url`` and the upstream at the embedded AWS; then
``with proxy.fault("hang"):`` (or "refuse", "slow") makes every AWS call of every function misbehave
until the block ends:

* ``pass``: bytes are relayed both ways, unchanged;
* ``hang``: connections are accepted and requests read, but nothing is forwarded or answered (a paused
  process, a black-holed partition);
* ``refuse``: the port is closed and open connections are reset (a process that is gone);
* ``slow``: every response is held back ``SLOW_SECONDS`` before its first byte is relayed;
* ``throttle``: every request is answered ``ThrottlingException`` (HTTP 400) without reaching AWS, and
  the connection closed, as a JSON-protocol service answers when over its rate;
* ``fail_entries``: every request is answered 200 with one failed entry (EventBridge's PutEvents).

The proxy works on bytes, not HTTP, so keep-alive connections, chunked uploads and every AWS protocol
pass through untouched. A connection that saw a hang is closed when the fault ends, as a client would
have given up on it anyway.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Literal, Self
from urllib.parse import urlsplit

type Mode = Literal["pass", "hang", "refuse", "slow", "throttle", "fail_entries"]

SLOW_SECONDS = 2.0


def _answer(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: fault-proxy\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# Canned answers, given without reaching AWS: what a JSON-protocol service (DynamoDB, KMS, SQS,
# EventBridge) answers when over its rate, and what EventBridge answers for an entry it could not take.
_ANSWERS: dict[Mode, bytes] = {
    "throttle": _answer("400 Bad Request", b'{"__type":"ThrottlingException","message":"Rate exceeded"}'),
    "fail_entries": _answer(
        "200 OK", b'{"FailedEntryCount":1,"Entries":[{"ErrorCode":"InternalFailure","ErrorMessage":"try again"}]}'
    ),
}
_POLL_SECONDS = 0.05


class AwsFaultProxy:
    def __init__(self) -> None:
        self._mode: Mode = "pass"
        self._upstream: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def forward_to(self, url: str) -> None:
        """Relay to this upstream (the embedded AWS), from the next connection on."""
        parts = urlsplit(url)
        self._upstream = (parts.hostname or "127.0.0.1", int(parts.port or 80))

    @contextlib.contextmanager
    def fault(self, mode: Mode) -> Iterator[None]:
        """Misbehave as `mode` inside the block; relay normally again afterwards."""
        self.set_mode(mode)
        try:
            yield
        finally:
            self.set_mode("pass")

    def set_mode(self, mode: Mode) -> None:
        with self._lock:
            previous, self._mode = self._mode, mode
        if mode == "refuse":
            self._close_listener()
            self._reset_all()
        elif previous == "refuse":
            self._listen()

    # ------------------------------------------------------------------ sockets

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="aws-fault-proxy", daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: refusing, or stopped
            with self._lock:
                self._open.add(client)
            threading.Thread(target=self._relay, args=(client,), name="aws-fault-relay", daemon=True).start()

    def _reset_all(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _reset(sock)

    def _relay(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        awaiting_answer = False
        hung = False
        try:
            while not self._stopped.is_set():
                mode = self._mode
                if hung and mode != "hang":
                    return
                watched = [client] if upstream is None else [client, upstream]
                readable, _, _ = select.select(watched, [], [], _POLL_SECONDS)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if mode == "hang":
                        hung = True  # read and dropped: nothing reaches AWS, nothing comes back
                    elif mode in _ANSWERS and sock is client:
                        client.sendall(_ANSWERS[mode])
                        return
                    elif sock is client:
                        if upstream is None:
                            upstream = self._connect_upstream()
                        upstream.sendall(data)
                        awaiting_answer = True
                    else:
                        if mode == "slow" and awaiting_answer:
                            time.sleep(SLOW_SECONDS)
                        awaiting_answer = False
                        client.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._open.discard(client)
            for opened in (client, upstream):
                if opened is not None:
                    with contextlib.suppress(OSError):
                        opened.close()

    def _connect_upstream(self) -> socket.socket:
        if self._upstream is None:
            raise OSError("the fault proxy has no upstream yet")
        upstream = socket.create_connection(self._upstream, timeout=5)
        upstream.settimeout(None)
        with self._lock:
            self._open.add(upstream)
        return upstream

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self._stopped.set()
        self._close_listener()
        self._reset_all()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a vanished peer's kernel answers."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
