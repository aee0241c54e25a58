"""A loopback HTTP server of product feeds, for tests of the feed fetch.

Each path is given a behaviour, which a test may change between runs::

    with FeedServer(introspect=provider_introspection(provider)) as server:
        server.serve("/protected/catalog.yml", Catalog(offers=12_000), protected=True)
        server.serve("/public/broken.yml", Malformed())
        server.serve("/public/catalog.yml", Catalog(offers=300))
        server.serve("/public/catalog.yml", Stall(seconds=5))  # the same path, now stalling
        server.requests_to("/protected/catalog.yml")  # what the fetcher sent

Behaviours: a deterministic YML catalog (streamed, with an ETag and 304 on a matching If-None-Match,
optionally gzip-encoded), an always-401, an oversized body that counts what it managed to send, malformed
XML, a redirect, a stall, and a trickle (a byte now and then). Streamed bodies are recorded as
``Transfer``s: bytes sent, and whether the client dropped the connection first. A protected path accepts
only bearer tokens the authorization server's introspection reports active (answers are cached for
`introspection_cache_seconds`); ``forget_tokens()`` drops the cache.

``Canary`` is a bare TCP listener on this machine's own non-loopback address: a redirect target that
proves, by never being connected to, that a private address was refused before any connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.server
import ipaddress
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from types import TracebackType
from typing import Any, Self

from tests.support.loopback import LoopbackServer
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider

CATALOG_DATE = "2025-03-01T09:00"
CATEGORY_NAMES = (
    "Home",
    "Kitchen",
    "Garden",
    "Tools",
    "Lighting",
    "Bathroom",
    "Storage",
    "Textiles",
    "Outdoor",
    "Office",
    "Pets",
    "Toys",
)
COLOURS = ("black", "white", "grey", "blue", "green", "red", "oak", "walnut")
MATERIALS = ("steel", "aluminium", "beech", "glass", "ceramic", "cotton", "linen", "recycled plastic")
OFFERS_PER_CHUNK = 250
FILLER_CHUNK_BYTES = 64 * 1024
SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


# ------------------------------------------------------------------ the YML catalog


def _catalog_head(offers: int, revision: int) -> bytes:
    categories = "\n".join(
        f'      <category id="{number + 1}"{f' parentId="{number // 4 + 1}"' if number >= 4 else ""}>{name}</category>'
        for number, name in enumerate(CATEGORY_NAMES)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<yml_catalog date="{CATALOG_DATE}:{revision:02d}+00:00">\n'
        "  <shop>\n"
        "    <name>Loopback Home Store</name>\n"
        "    <company>Loopback Home Store Ltd</company>\n"
        "    <url>https://shop.example.com/</url>\n"
        "    <platform>test catalog generator</platform>\n"
        f"    <version>{revision}</version>\n"
        "    <currencies>\n"
        '      <currency id="EUR" rate="1"/>\n'
        '      <currency id="USD" rate="1.08"/>\n'
        "    </currencies>\n"
        "    <categories>\n"
        f"{categories}\n"
        "    </categories>\n"
        "    <delivery-options>\n"
        '      <option cost="4.90" days="1-3"/>\n'
        '      <option cost="0" days="5" order-before="14"/>\n'
        "    </delivery-options>\n"
        f"    <!-- {offers} offers -->\n"
        "    <offers>\n"
    ).encode()


CATALOG_TAIL = b"    </offers>\n  </shop>\n</yml_catalog>\n"


def _offer(number: int, revision: int) -> str:
    offer_id = 100_000 + number
    category = number % len(CATEGORY_NAMES) + 1
    cents = (number * 7919 + revision * 131) % 50_000 + 199
    colour, material = COLOURS[number % len(COLOURS)], MATERIALS[(number // 3) % len(MATERIALS)]
    available = "false" if number % 17 == 0 else "true"
    old_price = (
        f"        <oldprice>{(cents * 5 // 4) // 100}.{(cents * 5 // 4) % 100:02d}</oldprice>\n" if number % 5 else ""
    )
    return (
        f'      <offer id="{offer_id}" available="{available}">\n'
        f"        <url>https://shop.example.com/products/{offer_id}?utm_source=feed&amp;utm_medium=yml</url>\n"
        f"        <price>{cents // 100}.{cents % 100:02d}</price>\n"
        f"{old_price}"
        "        <currencyId>EUR</currencyId>\n"
        f"        <categoryId>{category}</categoryId>\n"
        f"        <picture>https://cdn.shop.example.com/images/{offer_id}/main.jpg</picture>\n"
        f"        <picture>https://cdn.shop.example.com/images/{offer_id}/side.jpg</picture>\n"
        "        <delivery>true</delivery>\n"
        f"        <name>{CATEGORY_NAMES[category - 1]} item {offer_id}, {colour} {material} &amp; co.</name>\n"
        f"        <vendor>House Brand {number % 23 + 1}</vendor>\n"
        f"        <vendorCode>HB-{offer_id:07d}</vendorCode>\n"
        "        <description><![CDATA[<p>Sturdy "
        f"{material} in {colour}. Size {number % 9 + 1} &lt; 10 &amp; washable.</p>]]></description>\n"
        f'        <param name="Colour">{colour}</param>\n'
        f'        <param name="Material">{material}</param>\n'
        f'        <param name="Weight" unit="g">{(number * 37) % 4000 + 120}</param>\n'
        f"        <barcode>{4_000_000_000_000 + offer_id * 13:013d}</barcode>\n"
        "      </offer>\n"
    )


def catalog_chunks(offers: int, revision: int = 1) -> Iterator[bytes]:
    """The catalog's bytes, generated deterministically a few hundred offers at a time."""
    yield _catalog_head(offers, revision)
    for start in range(0, offers, OFFERS_PER_CHUNK):
        yield "".join(_offer(n, revision) for n in range(start, min(offers, start + OFFERS_PER_CHUNK))).encode()
    yield CATALOG_TAIL


@dataclass(frozen=True)
class CatalogFacts:
    size: int
    sha256: str
    etag: str


@cache
def catalog_facts(offers: int, revision: int = 1) -> CatalogFacts:
    """Length, digest and ETag of a catalog (computed once, streaming)."""
    digest, size = hashlib.sha256(), 0
    for chunk in catalog_chunks(offers, revision):
        digest.update(chunk)
        size += len(chunk)
    return CatalogFacts(size, digest.hexdigest(), f'"yml-{digest.hexdigest()[:32]}"')


def catalog_bytes(offers: int, revision: int = 1) -> bytes:
    """The whole catalog, for comparing with a stored copy."""
    return b"".join(catalog_chunks(offers, revision))


# ------------------------------------------------------------------ behaviours


@dataclass(frozen=True)
class Catalog:
    """A YML catalog with an ETag; 304 when If-None-Match names it. gzip: Content-Encoding gzip, chunked."""

    offers: int
    revision: int = 1
    gzip: bool = False


@dataclass(frozen=True)
class Unauthorized:
    """Refuses every request with 401, whatever the token."""


@dataclass(frozen=True)
class Oversized:
    """A catalog-shaped body of `total_bytes`, streamed; chunked unless `declare_length`."""

    total_bytes: int
    declare_length: bool = False


@dataclass(frozen=True)
class Malformed:
    """200 with XML that breaks off in the middle of an offer."""


@dataclass(frozen=True)
class Redirect:
    location: str
    status: int = 302


@dataclass(frozen=True)
class Stall:
    """Sends the headers (or, with headers_first False, nothing at all), then waits `seconds`."""

    seconds: float
    headers_first: bool = True


@dataclass(frozen=True)
class Trickle:
    """A small catalog with its Content-Length, sent one byte every `interval` for `seconds`, then the rest:
    every read gets data well within any read timeout, yet the download takes `seconds`."""

    seconds: float
    offers: int = 3
    interval: float = 0.5


type Behaviour = Catalog | Unauthorized | Oversized | Malformed | Redirect | Stall | Trickle

MALFORMED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<yml_catalog date="2025-03-01T09:00+00:00"><shop><offers>\n'
    b'<offer id="1" available="true"><name>Complete</name><price>1.00</price></offer>\n'
    b'<offer id="2" available="true"><name>Broken <price>2.00</price></offer>\n'
    b"</offers></shop></yml_catalog>\n"
)


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    status: int
    authorization: bool  # an Authorization header was sent
    bearer: str | None = field(repr=False)  # its bearer token (to revoke it in a test)
    if_none_match: str | None
    if_modified_since: str | None
    accept_encoding: str | None


@dataclass
class Transfer:
    """One streamed body: how much the server managed to send, and whether the client went away first."""

    path: str
    planned: int
    sent: int = 0
    completed: bool = False
    dropped: bool = False


# ------------------------------------------------------------------ the server


def provider_introspection(
    provider: OidcProvider, client_id: str = BASIC_CLIENT_ID, client_secret: str = BASIC_CLIENT_SECRET
) -> Callable[[str], bool]:
    """Whether the authorization server reports a token active (RFC 7662, as a resource server asks)."""
    lock = threading.Lock()

    def active(token: str) -> bool:
        with lock:  # the provider helper's HTTP session is shared
            return bool(provider.introspect(token, client_id, client_secret).get("active"))

    return active


class FeedServer(LoopbackServer):
    def __init__(
        self, *, introspect: Callable[[str], bool] | None = None, introspection_cache_seconds: float = 2.0
    ) -> None:
        self.introspect = introspect
        self.introspection_cache_seconds = introspection_cache_seconds
        self.requests: list[RecordedRequest] = []
        self.transfers: list[Transfer] = []
        self._routes: dict[str, tuple[Behaviour, bool]] = {}
        self._verdicts: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler, "feed-server")

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    # -- configuration and observation
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, behaviour: Behaviour, *, protected: bool | None = None) -> str:
        """Give `path` a behaviour (protected keeps its earlier setting unless given); returns its URL."""
        with self._lock:
            keep = self._routes[path][1] if path in self._routes else False
            self._routes[path] = (behaviour, keep if protected is None else protected)
        return self.url(path)

    def forget_tokens(self) -> None:
        """Drop cached introspection answers (after a test revoked a token)."""
        with self._lock:
            self._verdicts.clear()

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def transfers_of(self, path: str) -> list[Transfer]:
        with self._lock:
            return [t for t in self.transfers if t.path == path]

    # -- handling
    def _token_active(self, token: str) -> bool:
        now = time.monotonic()
        with self._lock:
            cached = self._verdicts.get(token)
        if cached and cached[1] > now:
            return cached[0]
        if self.introspect is None:
            raise RuntimeError("a protected path needs an introspect callable")
        active = self.introspect(token)
        with self._lock:
            self._verdicts[token] = (active, now + self.introspection_cache_seconds)
        return active

    def _record(self, handler: http.server.BaseHTTPRequestHandler, path: str, status: int) -> None:
        authorization = handler.headers.get("Authorization")
        scheme, _, token = (authorization or "").partition(" ")
        record = RecordedRequest(
            path=path,
            status=status,
            authorization=authorization is not None,
            bearer=token.strip() if scheme.lower() == "bearer" and token.strip() else None,
            if_none_match=handler.headers.get("If-None-Match"),
            if_modified_since=handler.headers.get("If-Modified-Since"),
            accept_encoding=handler.headers.get("Accept-Encoding"),
        )
        with self._lock:
            self.requests.append(record)

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            route = self._routes.get(path)
        if route is None:
            self._record(handler, path, 404)
            self._simple(handler, 404, b"no such feed\n")
            return
        behaviour, protected = route
        if protected or isinstance(behaviour, Unauthorized):
            scheme, _, token = (handler.headers.get("Authorization") or "").partition(" ")
            allowed = (
                not isinstance(behaviour, Unauthorized)
                and scheme.lower() == "bearer"
                and bool(token.strip())
                and self._token_active(token.strip())
            )
            if not allowed:
                self._record(handler, path, 401)
                self._simple(handler, 401, b"invalid token\n", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
                return
        match behaviour:
            case Catalog():
                self._catalog(handler, path, behaviour)
            case Oversized():
                self._oversized(handler, path, behaviour)
            case Malformed():
                self._record(handler, path, 200)
                self._simple(handler, 200, MALFORMED_BODY, {"Content-Type": "application/xml"})
            case Redirect():
                self._record(handler, path, behaviour.status)
                self._simple(handler, behaviour.status, b"moved\n", {"Location": behaviour.location})
            case Stall():
                self._stall(handler, path, behaviour)
            case Trickle():
                self._trickle(handler, path, behaviour)
            case Unauthorized():  # handled above
                raise AssertionError("unreachable")

    @staticmethod
    def _simple(
        handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @staticmethod
    def _matches(if_none_match: str | None, etag: str) -> bool:
        if not if_none_match:
            return False
        candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
        return "*" in candidates or etag in candidates

    def _catalog(self, handler: http.server.BaseHTTPRequestHandler, path: str, catalog: Catalog) -> None:
        facts = catalog_facts(catalog.offers, catalog.revision)
        if self._matches(handler.headers.get("If-None-Match"), facts.etag):
            self._record(handler, path, 304)
            handler.send_response(304)
            handler.send_header("ETag", facts.etag)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        self._record(handler, path, 200)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/xml; charset=utf-8")
        handler.send_header("ETag", facts.etag)
        handler.send_header("Last-Modified", "Sat, 01 Mar 2025 09:00:00 GMT")
        if catalog.gzip:
            handler.send_header("Content-Encoding", "gzip")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
            transfer = self._transfer(path, facts.size)
            with self._sending(transfer):
                for chunk in catalog_chunks(catalog.offers, catalog.revision):
                    self._write_chunk(handler, compressor.compress(chunk), transfer)
                self._write_chunk(handler, compressor.flush(), transfer)
                handler.wfile.write(b"0\r\n\r\n")
            return
        handler.send_header("Content-Length", str(facts.size))
        handler.end_headers()
        transfer = self._transfer(path, facts.size)
        with self._sending(transfer):
            for chunk in catalog_chunks(catalog.offers, catalog.revision):
                handler.wfile.write(chunk)
                transfer.sent += len(chunk)

    def _oversized(self, handler: http.server.BaseHTTPRequestHandler, path: str, oversized: Oversized) -> None:
        self._record(handler, path, 200)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/xml")
        if oversized.declare_length:
            handler.send_header("Content-Length", str(oversized.total_bytes))
        else:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        transfer = self._transfer(path, oversized.total_bytes)
        offer = _offer(7, 1).encode()
        block = offer * max(1, FILLER_CHUNK_BYTES // len(offer))  # whole offers: well-formed up to the cut
        with self._sending(transfer):
            remaining = oversized.total_bytes
            piece = _catalog_head(0, 1)
            while remaining > 0:
                piece = piece[:remaining]
                if oversized.declare_length:
                    handler.wfile.write(piece)
                    transfer.sent += len(piece)
                else:
                    self._write_chunk(handler, piece, transfer)
                remaining -= len(piece)
                piece = block
            if not oversized.declare_length:
                handler.wfile.write(b"0\r\n\r\n")

    def _stall(self, handler: http.server.BaseHTTPRequestHandler, path: str, stall: Stall) -> None:
        self._record(handler, path, 200)
        if stall.headers_first:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            handler.wfile.flush()
        self._stopping.wait(stall.seconds)
        with contextlib.suppress(OSError):
            if not stall.headers_first:
                handler.send_response(200)
                handler.send_header("Transfer-Encoding", "chunked")
                handler.end_headers()
            handler.wfile.write(b"0\r\n\r\n")
        handler.close_connection = True

    def _trickle(self, handler: http.server.BaseHTTPRequestHandler, path: str, trickle: Trickle) -> None:
        body = catalog_bytes(trickle.offers)
        self._record(handler, path, 200)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        transfer = self._transfer(path, len(body))
        until = time.monotonic() + trickle.seconds
        with self._sending(transfer):
            while transfer.sent < len(body) - 1 and time.monotonic() < until:
                handler.wfile.write(body[transfer.sent : transfer.sent + 1])
                handler.wfile.flush()
                transfer.sent += 1
                if self._stopping.wait(trickle.interval):
                    return
            handler.wfile.write(body[transfer.sent :])
            transfer.sent = len(body)

    def _transfer(self, path: str, planned: int) -> Transfer:
        transfer = Transfer(path, planned)
        with self._lock:
            self.transfers.append(transfer)
        return transfer

    @contextlib.contextmanager
    def _sending(self, transfer: Transfer) -> Iterator[None]:
        try:
            yield
            transfer.completed = True
        except (BrokenPipeError, ConnectionResetError):
            transfer.dropped = True

    @staticmethod
    def _write_chunk(handler: http.server.BaseHTTPRequestHandler, data: bytes, transfer: Transfer) -> None:
        if not data:
            return
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        transfer.sent += len(data)


# ------------------------------------------------------------------ a private address that must stay untouched


def own_private_address() -> str:
    """This machine's first IPv4 address that is neither loopback nor public (an interface's address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on this interface
            address = ipaddress.IPv4Address(answer[20:24])
            if not address.is_loopback and not address.is_global:
                return str(address)
    raise RuntimeError("this machine has no private IPv4 address on any interface")


class Canary:
    """A TCP listener on a private address that counts every connection made to it."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or own_private_address()
        self.connections = 0
        self._socket = socket.create_server((self.host, 0))
        self._socket.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="canary", daemon=True)

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/feed"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            connection.close()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(2)
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
