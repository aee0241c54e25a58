"""Token, metadata and revocation answers are read with a limit on their decoded size: a gzip bomb or a
body that never ends costs at most the limit, and is reported as the provider failing."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Callable
from functools import cache

import pytest

from oauth_connections.oauth import discovery, revocation, token_endpoint
from oauth_connections.security.netguard import UrlPolicy
from tests.support.token_endpoint import Endless, Scripted, ScriptedTokenEndpoint

LOOPBACK = UrlPolicy(allow_insecure_loopback=True)
BOMB_DECODED_BYTES = 64 * 1024 * 1024
# Reading stops at the limit; what the socket and the decoder buffer on top stays far below the bomb.
MEMORY_CEILING_BYTES = 8 * 1024 * 1024


@cache
def gzip_bomb() -> bytes:
    """64 MiB of a JSON-looking body, gzip-compressed to about 64 KiB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(b'{"access_token": "')]
    block = b"a" * (1024 * 1024)
    parts += [packer.compress(block) for _ in range(BOMB_DECODED_BYTES // len(block))]
    parts.append(packer.flush())
    return b"".join(parts)


def bomb() -> Scripted:
    return Scripted(200, gzip_bomb(), {"Content-Type": "application/json", "Content-Encoding": "gzip"})


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> ScriptedTokenEndpoint:
    running_endpoint.reset()
    return running_endpoint


def client(endpoint: ScriptedTokenEndpoint) -> token_endpoint.ClientSettings:
    return token_endpoint.ClientSettings(
        client_id="cid", client_secret="csecret", token_url=endpoint.url, auth_method="client_secret_basic"
    )


def token_call(endpoint: ScriptedTokenEndpoint) -> None:
    token_endpoint.exchange_code(
        client(endpoint),
        code="the-code",
        redirect_uri="https://api.example.com/oauth2/callback",
        code_verifier="v" * 50,
        policy=LOOPBACK,
        timeout=5,
    )


def refresh_call(endpoint: ScriptedTokenEndpoint) -> None:
    current = token_endpoint.TokenSet(access_token="old", token_type="Bearer", refresh_token="rt")
    token_endpoint.refresh(client(endpoint), current, policy=LOOPBACK, timeout=5)


def revocation_call(endpoint: ScriptedTokenEndpoint) -> None:
    revocation.revoke(client(endpoint), endpoint.url, "rt", "refresh_token", policy=LOOPBACK, timeout=5)


def discovery_call(endpoint: ScriptedTokenEndpoint) -> None:
    discovery.discover(f"http://127.0.0.1:{endpoint.port}", LOOPBACK, 5)


PROVIDER_CALLS = [token_call, refresh_call, revocation_call]


@pytest.mark.parametrize("call", PROVIDER_CALLS, ids=["code", "refresh", "revocation"])
def test_a_gzip_bomb_stops_at_the_limit(endpoint: ScriptedTokenEndpoint, call: Callable[..., None]) -> None:
    gzip_bomb()  # built before measuring
    endpoint.queue(bomb())
    tracemalloc.start()
    try:
        with pytest.raises(token_endpoint.ProviderResponseTooLargeError) as raised:
            call(endpoint)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_CEILING_BYTES
    assert raised.value.code == "provider_unavailable"
    assert f"more than {token_endpoint.MAX_PROVIDER_RESPONSE_BYTES} bytes" in raised.value.message
    assert len(endpoint.requests) == 1


@pytest.mark.parametrize("call", PROVIDER_CALLS, ids=["code", "refresh", "revocation"])
def test_an_endless_body_stops_at_the_limit(endpoint: ScriptedTokenEndpoint, call: Callable[..., None]) -> None:
    endless = Endless()
    endpoint.queue(endless)
    with pytest.raises(token_endpoint.ProviderResponseTooLargeError) as raised:
        call(endpoint)
    assert raised.value.code == "provider_unavailable"
    assert endless.sent < MEMORY_CEILING_BYTES  # the client hung up long before the server's cap


@pytest.mark.parametrize("answer", [bomb, Endless], ids=["gzip-bomb", "endless"])
def test_oversized_metadata_fails_discovery(endpoint: ScriptedTokenEndpoint, answer: Callable[[], object]) -> None:
    first, second = answer(), answer()
    endpoint.queue(first, second)  # both metadata locations
    with pytest.raises(discovery.DiscoveryError) as raised:
        discovery_call(endpoint)
    assert raised.value.code == "discovery_failed"
    assert (
        raised.value.message
        == f"discovery failed: metadata is larger than {token_endpoint.MAX_PROVIDER_RESPONSE_BYTES} bytes"
    )
    assert [r.path for r in endpoint.requests] == [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ]
    for sent in (first, second):
        if isinstance(sent, Endless):
            assert sent.sent < MEMORY_CEILING_BYTES


def test_answers_under_the_limit_are_read_whole(endpoint: ScriptedTokenEndpoint) -> None:
    token = "t" * (token_endpoint.MAX_PROVIDER_RESPONSE_BYTES - 100)
    compressed = zlib.compress(f'{{"access_token": "{token}"}}'.encode(), wbits=31)
    endpoint.queue(Scripted(200, compressed, {"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    refreshed = token_endpoint.refresh(
        client(endpoint),
        token_endpoint.TokenSet(access_token="old", token_type="Bearer", refresh_token="rt"),
        policy=LOOPBACK,
        timeout=5,
    )
    assert refreshed.access_token == token
