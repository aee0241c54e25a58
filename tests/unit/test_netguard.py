"""The SSRF guard: stored URLs and every outbound connection, redirects and DNS rebinding included."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from oauth_connections.core.errors import UnsafeUrlError
from oauth_connections.security.netguard import (
    STRICT,
    UrlPolicy,
    check_url,
    guarded_session,
    is_public_address,
    is_under,
    parse_host_literal,
)
from tests.unit.conftest import PUBLIC_ADDRESS

LOCAL = UrlPolicy(allow_insecure_loopback=True)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "169.254.170.2",
        "100.64.0.1",
        "100.100.100.200",
        "0.0.0.0",  # noqa: S104
        "255.255.255.255",
        "224.0.0.1",
        "192.0.0.192",
        "198.18.0.1",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "ff02::1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::ffff:7f00:1]", "::ffff:127.0.0.1"),
        ("auth.example.com", None),
        ("deadbeef.example.com", None),
    ],
)
def test_every_spelling_of_an_ip_literal_is_recognised(host: str, expected: str | None) -> None:
    parsed = parse_host_literal(host)
    assert (str(parsed) if parsed else None) == expected


def test_loopback_http_only_with_the_local_setting() -> None:
    with pytest.raises(UnsafeUrlError):
        check_url("http://127.0.0.1:8080/token", STRICT)
    assert check_url("http://127.0.0.1:8080/token", LOCAL)
    assert check_url("http://localhost:8080/token", LOCAL)
    with pytest.raises(UnsafeUrlError):
        check_url("http://10.0.0.1/token", LOCAL)  # the setting opens loopback only
    with pytest.raises(UnsafeUrlError):
        check_url("https://169.254.169.254/", LOCAL)


def test_unresolvable_names_are_stored_but_never_called() -> None:
    assert check_url("https://nowhere.invalid/token")
    with pytest.raises(UnsafeUrlError) as error:
        check_url("https://nowhere.invalid/token", require_resolution=True)
    assert error.value.code == "unresolvable_host"


@pytest.mark.parametrize(
    ("url", "base", "under"),
    [
        ("https://api.example.com/v2/contacts", "https://api.example.com/v2/", True),
        ("https://api.example.com/v2", "https://api.example.com/v2/", True),
        ("https://api.example.com/v20/x", "https://api.example.com/v2", False),
        ("https://api.example.com/v1/x", "https://api.example.com/v2/", False),
        ("https://api.example.com.evil.com/v2/x", "https://api.example.com/v2/", False),
        ("http://api.example.com/v2/x", "https://api.example.com/v2/", False),
        ("https://api.example.com:8443/v2/x", "https://api.example.com/v2/", False),
        ("https://api.example.com/anything", "https://api.example.com", True),
    ],
)
def test_is_under(url: str, base: str, under: bool) -> None:
    assert is_under(url, base) is under


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []
    redirect_to: ClassVar[str | None] = None

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        if self.redirect_to and self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"hits": [], "redirect_to": None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    """A bare TCP listener on loopback that records every connection it accepts (and drops it)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[object] = []

    def accept() -> None:
        while True:
            try:
                connection, peer = server.accept()
            except OSError:
                return
            accepted.append(peer)
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


def test_strict_guard_never_connects_to_loopback(local_server: tuple[str, type[_Handler]]) -> None:
    url, handler = local_server
    with pytest.raises(UnsafeUrlError) as raised:
        guarded_session(STRICT).get(url + "/x", timeout=3)
    assert raised.value.code == "unsafe_url"
    assert raised.value.message == "address 127.0.0.1 is not a public address"
    assert handler.hits == []
    assert guarded_session(LOCAL).get(url + "/x", timeout=3).text == "ok"


@pytest.mark.parametrize(
    ("target", "refusal"),
    [
        ("http://10.0.0.1/internal", "address 10.0.0.1 is not a public address"),
        ("https://169.254.169.254/latest/meta-data/", "address 169.254.169.254 is not a public address"),
        # A public address, so only the check of the hop itself (not the pin) can refuse plain http.
        (f"http://{PUBLIC_ADDRESS}/plain", "URL must use https"),
    ],
)
def test_redirect_hops_are_checked(local_server: tuple[str, type[_Handler]], target: str, refusal: str) -> None:
    """The hop is refused by its own check before any connection, with the guard's error."""
    url, handler = local_server
    handler.redirect_to = target
    with pytest.raises(UnsafeUrlError) as raised:
        guarded_session(LOCAL).get(url + "/redirect", timeout=3)
    assert raised.value.code == "unsafe_url"
    assert raised.value.message == refusal
    assert handler.hits == ["/redirect"]


def test_dns_rebinding_is_refused_at_connect_time(
    listener: tuple[int, list[object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name resolves publicly when stored and when the request is checked, then to loopback when
    the connection is made: the pinned connection refuses it and never connects."""
    port, accepted = listener
    answers = [PUBLIC_ADDRESS, PUBLIC_ADDRESS, "127.0.0.1"]
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.example.com":
            return real(host, *args, **kwargs)
        address = answers[min(len(lookups), len(answers) - 1)]
        lookups.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    stored = check_url(f"https://rebind.example.com:{port}/feed", STRICT)
    with pytest.raises(UnsafeUrlError) as raised:
        guarded_session(STRICT).get(stored, timeout=3)
    assert lookups == answers  # stored, checked before sending, and resolved again to connect
    assert raised.value.code == "unsafe_url"
    assert raised.value.message == "refused when connecting: address 127.0.0.1 is not a public address"
    assert accepted == []


def test_guard_ignores_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    session = guarded_session(STRICT)
    assert session.trust_env is False
