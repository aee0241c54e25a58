"""Provider calls end at their overall deadline, even when the server keeps every single read alive.

The server here sends its answer a byte at a time, each byte well within the per-read timeout: only a
deadline over the whole call (connect and every read) ends it.
"""

from __future__ import annotations

import http.server
import time
from collections.abc import Iterator

import pytest

from oauth_connections.oauth import discovery, revocation, token_endpoint
from oauth_connections.security.netguard import UrlPolicy
from tests.support.loopback import LoopbackServer

LOOPBACK = UrlPolicy(allow_insecure_loopback=True)
BODY = b'{"access_token": "slow", "token_type": "bearer", "issuer": "x"}' + b" " * 200
BYTE_EVERY_SECONDS = 0.2
DEADLINE_SECONDS = 1.0


class DrippingServer(LoopbackServer):
    """Answers every request with 200 and a body it sends one byte every BYTE_EVERY_SECONDS."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _drip(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                try:
                    for index in range(len(BODY)):
                        self.wfile.write(BODY[index : index + 1])
                        self.wfile.flush()
                        time.sleep(BYTE_EVERY_SECONDS)
                except (BrokenPipeError, ConnectionResetError):
                    return

            do_GET = do_POST = _drip

            def log_message(self, *args: object) -> None:
                pass

        self._serve(Handler, "dripping-server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def dripping() -> Iterator[DrippingServer]:
    with DrippingServer() as running:
        yield running


def client(server: DrippingServer) -> token_endpoint.ClientSettings:
    return token_endpoint.ClientSettings("cid", "csecret", f"{server.url}/token", "client_secret_basic")


def test_a_refresh_ends_at_its_deadline(dripping: DrippingServer) -> None:
    started = time.monotonic()
    with pytest.raises(token_endpoint.ProviderUnavailableError) as raised:
        token_endpoint.refresh(
            client(dripping), token_endpoint.TokenSet("a", "Bearer", "r"), policy=LOOPBACK, timeout=DEADLINE_SECONDS
        )
    elapsed = time.monotonic() - started
    assert raised.value.message == "token endpoint timed out"
    assert DEADLINE_SECONDS <= elapsed < DEADLINE_SECONDS + 0.8


def test_a_code_exchange_ends_at_its_deadline(dripping: DrippingServer) -> None:
    started = time.monotonic()
    with pytest.raises(token_endpoint.ProviderUnavailableError) as raised:
        token_endpoint.exchange_code(
            client(dripping),
            code="c",
            redirect_uri="https://api.example.com/oauth2/callback",
            code_verifier=None,
            policy=LOOPBACK,
            timeout=DEADLINE_SECONDS,
        )
    assert raised.value.message == "token endpoint timed out"
    assert time.monotonic() - started < DEADLINE_SECONDS + 0.8


def test_a_revocation_ends_at_its_deadline(dripping: DrippingServer) -> None:
    started = time.monotonic()
    with pytest.raises(token_endpoint.ProviderUnavailableError) as raised:
        revocation.revoke(
            client(dripping), f"{dripping.url}/revoke", "r", "refresh_token", policy=LOOPBACK, timeout=DEADLINE_SECONDS
        )
    assert raised.value.message.startswith("revocation endpoint unreachable")
    assert time.monotonic() - started < DEADLINE_SECONDS + 0.8


def test_discovery_ends_at_its_deadline_for_each_document(dripping: DrippingServer) -> None:
    started = time.monotonic()
    with pytest.raises(discovery.DiscoveryError):
        discovery.discover(dripping.url, LOOPBACK, DEADLINE_SECONDS)
    assert time.monotonic() - started < 2 * DEADLINE_SECONDS + 1.0
