"""The one SSRF guard for every URL the service stores or calls.

Two layers: `check_url` validates a URL when it is stored (scheme, shape, literal and resolved addresses),
and `guarded_session` gives a requests session whose connections resolve the host, check every address,
and connect to the vetted address itself, so DNS rebinding between check and call cannot reach inside
the network. Redirects are vetted hop by hop, because each hop opens its own connection through it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import SplitResult, urlsplit

from oauth_connections.core.errors import UnsafeUrlError

MAX_URL_LENGTH = 2048

# Metadata services of cloud providers; most are link-local or private already, named for clarity.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$", re.IGNORECASE)
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class UrlPolicy:
    """allow_insecure_loopback: the local stack may call http://127.0.0.1 (never set in the cloud)."""

    allow_insecure_loopback: bool = False


STRICT = UrlPolicy()


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_loopback(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return embedded.is_loopback
    return address.is_loopback


def is_public_address(address: IPAddress) -> bool:
    """True for a globally routable unicast address that is no metadata endpoint."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
    if address in METADATA_ADDRESSES:
        return False
    return address.is_global and not address.is_multicast and not address.is_reserved


def check_address(address: IPAddress, policy: UrlPolicy) -> None:
    if is_public_address(address):
        return
    if policy.allow_insecure_loopback and is_loopback(address):
        return
    raise UnsafeUrlError(f"address {address} is not a public address")


def parse_host_literal(host: str) -> IPAddress | None:
    """An IP literal in any spelling a resolver accepts (decimal, octal, hex, short forms), or None."""
    candidate = host.strip("[]")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(candidate) and not candidate.replace(".", "").isalpha():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(candidate))
        except OSError:
            return None
    return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def resolve_checked(host: str, port: int, policy: UrlPolicy) -> list[IPAddress]:
    """Resolve a host and vet every address; one bad address refuses the host (no round-robin games)."""
    literal = parse_host_literal(host)
    if literal is not None:
        check_address(literal, policy)
        return [literal]
    try:
        addresses = _resolve(host, port)
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeUrlError(f"host {host!r} does not resolve", code="unresolvable_host") from error
    if not addresses:
        raise UnsafeUrlError(f"host {host!r} does not resolve", code="unresolvable_host")
    for address in addresses:
        check_address(address, policy)
    return addresses


def _split(url: str) -> SplitResult:
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrlError(f"URL longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise UnsafeUrlError("URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        raise UnsafeUrlError(f"malformed URL: {error}") from error
    return parts


def _check_hostname_syntax(host: str) -> None:
    if parse_host_literal(host) is not None:
        return
    labels = host.rstrip(".").split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise UnsafeUrlError(f"invalid host name {host!r}")


def check_url(url: str, policy: UrlPolicy = STRICT, *, require_resolution: bool = False) -> str:
    """Vet a URL before storing or calling it; returns the URL unchanged.

    With require_resolution False (when a URL is stored) a name that does not resolve is accepted:
    resolution is checked again, and then required, at every call.
    """
    parts = _split(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("https", "http"):
        raise UnsafeUrlError("URL must use https")
    if not host:
        raise UnsafeUrlError("URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrlError("URL must not carry credentials")
    _check_hostname_syntax(host)
    port = parts.port or (443 if scheme == "https" else 80)
    try:
        addresses = resolve_checked(host, port, policy)
    except UnsafeUrlError as error:
        if error.code != "unresolvable_host" or require_resolution:
            raise
        addresses = []
    if scheme == "http" and not (
        policy.allow_insecure_loopback and addresses and all(is_loopback(a) for a in addresses)
    ):
        raise UnsafeUrlError("URL must use https")
    return url


def is_under(url: str, base: str) -> bool:
    """True when url is base itself or below it: same scheme, host and port, and a path under base's."""
    target, prefix = urlsplit(url), urlsplit(base)
    if (target.scheme.lower(), target.hostname, target.port) != (
        prefix.scheme.lower(),
        prefix.hostname,
        prefix.port,
    ):
        return False
    base_path = prefix.path.rstrip("/")
    return target.path == base_path or target.path.startswith(base_path + "/") or not base_path


# ------------------------------------------------------------------ overall deadline


class CallDeadline:
    """A wall-clock limit on one outbound call: the connect and every read together.

    A socket timeout bounds each read alone, so a server that sends a byte a second keeps a call alive
    forever. When the deadline passes, every socket the call opened is shut down, which ends a blocked
    read at once; the caller then sees a connection error and `expired` tells it why.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, seconds)
        self.expires = time.monotonic() + self.seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_call_deadline: ContextVar[CallDeadline | None] = ContextVar("outbound_call_deadline", default=None)


@contextlib.contextmanager
def call_deadline(seconds: float) -> Iterator[CallDeadline]:
    """Bound every guarded connection opened inside the block by one overall deadline."""
    deadline = CallDeadline(seconds)
    token = _call_deadline.set(deadline)
    deadline._timer.start()
    try:
        yield deadline
    finally:
        deadline._timer.cancel()
        _call_deadline.reset(token)


# ------------------------------------------------------------------ requests integration


def _connect_timeout(timeout: Any, deadline: CallDeadline | None) -> Any:
    if deadline is None:
        return timeout
    left = deadline.remaining()
    return min(float(timeout), left) if isinstance(timeout, int | float) else left


@cache
def _adapter_class(policy: UrlPolicy) -> type[Any]:
    """Build (once per policy) an HTTPAdapter whose connections vet and pin the resolved address."""
    import requests.adapters
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.exceptions import NewConnectionError
    from urllib3.util.connection import create_connection

    def new_conn(self: HTTPConnection) -> socket.socket:
        # The guard's own error passes through urllib3 and requests unchanged (neither catches it), so
        # callers tell a refusal from a network failure by its class, not by parsing a message.
        try:
            addresses = resolve_checked(self._dns_host, self.port, policy)
        except UnsafeUrlError as error:
            raise UnsafeUrlError(f"refused when connecting: {error.message}", code=error.code) from error
        last_error: OSError | None = None
        deadline = _call_deadline.get()
        for address in addresses:
            try:
                sock = create_connection(
                    (str(address), self.port),
                    _connect_timeout(self.timeout, deadline),
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as error:
                last_error = error
                continue
            if deadline is not None:
                deadline.watch(sock)
            return sock
        raise NewConnectionError(self, f"failed to connect: {last_error}") from last_error

    http_conn = type("GuardedHTTPConnection", (HTTPConnection,), {"_new_conn": new_conn})
    https_conn = type("GuardedHTTPSConnection", (HTTPSConnection,), {"_new_conn": new_conn})
    http_pool = type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn})
    https_pool = type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn})

    class GuardedAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            check_url(request.url, policy, require_resolution=True)
            return super().send(request, *args, **kwargs)

    return GuardedAdapter


def mount_guard(session: Any, policy: UrlPolicy) -> Any:
    """Route every request of a requests session (or a subclass, e.g. an OAuth2 session) through the guard."""
    adapter = _adapter_class(policy)()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.trust_env = False  # a proxy from the environment would bypass the address pinning
    return session


def guarded_session(policy: UrlPolicy) -> Any:
    import requests

    return mount_guard(requests.Session(), policy)
