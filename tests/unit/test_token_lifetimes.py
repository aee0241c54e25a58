"""Absurd token lifetimes (`expires_in`) are an unknown expiry, at the code exchange and on refresh.

The scripted endpoint sends the raw bodies real providers have sent; the callback is driven through the
API with a code from the real provider, the refresh through GetTokenFunction.
"""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from oauth_connections.connections import tokens
from oauth_connections.core.config import get_settings
from oauth_connections.oauth import token_endpoint
from oauth_connections.security.netguard import UrlPolicy
from oauth_connections.storage.connections import CONNECTIONS
from tests.conftest import InProcessApi, LambdaContext, load_handler
from tests.support.provider import OidcProvider
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint
from tests.support.user_agent import walk_authorization
from tests.unit.flow_helpers import callback, create_connection, open_redirect_url, start

ABSURD = ["1e400", '"1e400"', '"Infinity"', "-5", '"-5"', "NaN", '"NaN"', str(2**63), '"' + "9" * 40 + '"', "true"]


def body_with(expires_in: str, **fields: str) -> Scripted:
    extra = "".join(f', "{name}": "{value}"' for name, value in fields.items())
    raw = f'{{"access_token": "absurd-access", "token_type": "bearer", "expires_in": {expires_in}{extra}}}'
    return Scripted(body=raw, headers={"Content-Type": "application/json"})


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> ScriptedTokenEndpoint:
    running_endpoint.reset()
    return running_endpoint


def client_of(endpoint: ScriptedTokenEndpoint) -> token_endpoint.ClientSettings:
    return token_endpoint.ClientSettings("cid", "csecret", endpoint.url, "client_secret_basic")


@pytest.mark.parametrize("expires_in", ABSURD)
def test_exchange_treats_an_absurd_lifetime_as_unknown(endpoint: ScriptedTokenEndpoint, expires_in: str) -> None:
    endpoint.queue(body_with(expires_in))
    token_set = token_endpoint.exchange_code(
        client_of(endpoint),
        code="c",
        redirect_uri="https://api.example.com/oauth2/callback",
        code_verifier=None,
        policy=UrlPolicy(allow_insecure_loopback=True),
        timeout=5.0,
    )
    assert token_set.access_token == "absurd-access"
    assert token_set.expires_at is None


@pytest.mark.parametrize("expires_in", ABSURD)
def test_refresh_treats_an_absurd_lifetime_as_unknown(endpoint: ScriptedTokenEndpoint, expires_in: str) -> None:
    endpoint.queue(body_with(expires_in, refresh_token="rotated"))
    current = token_endpoint.TokenSet("old", "Bearer", "refresh-old", int(time.time()) - 5)
    fresh = token_endpoint.refresh(
        client_of(endpoint), current, policy=UrlPolicy(allow_insecure_loopback=True), timeout=5.0
    )
    assert (fresh.access_token, fresh.refresh_token, fresh.expires_at) == ("absurd-access", "rotated", None)


@pytest.mark.parametrize(("expires_in", "seconds"), [("3600", 3600), ('"120.5"', 120), ("60.0", 60)])
def test_sane_lifetimes_still_count(endpoint: ScriptedTokenEndpoint, expires_in: str, seconds: int) -> None:
    endpoint.queue(body_with(expires_in))
    before = int(time.time())
    fresh = token_endpoint.refresh(
        client_of(endpoint),
        token_endpoint.TokenSet("old", "Bearer", "r"),
        policy=UrlPolicy(allow_insecure_loopback=True),
        timeout=5.0,
    )
    assert fresh.expires_at is not None
    assert before + seconds <= fresh.expires_at <= int(time.time()) + seconds


@pytest.mark.parametrize("expires_in", ["1e400", '"Infinity"', "NaN", str(2**63), '"' + "9" * 40 + '"'])
def test_callback_connects_with_an_unknown_expiry(
    flow_api: InProcessApi, provider: OidcProvider, endpoint: ScriptedTokenEndpoint, expires_in: str
) -> None:
    """The real provider issues the code; the token endpoint answers an absurd lifetime; the callback connects."""
    connection = create_connection(flow_api, provider, token_url=endpoint.url)
    endpoint.queue(body_with(expires_in, refresh_token="refresh-absurd"))
    redirect = open_redirect_url(flow_api, start(flow_api, connection["id"]))
    response = callback(flow_api, walk_authorization(redirect.location), redirect.cookie)
    assert response.status == 302, response.text
    assert "status=connected" in response.headers["Location"]
    assert endpoint.requests[-1].form["grant_type"] == "authorization_code"
    shown = flow_api.call("get_connection", connection_id=connection["id"]).json()
    assert (shown["status"], shown["expires_at"]) == ("connected", None)
    record = CONNECTIONS.load(flow_api.tenant, connection["id"], consistent=True)
    stored = tokens.decrypt_tokens(get_settings(), record)
    assert stored is not None
    assert (stored.refresh_token, stored.expires_at) == ("refresh-absurd", None)


@pytest.mark.parametrize("expires_in", ["1e400", '"Infinity"', "-5", "NaN", str(2**63), '"' + "9" * 40 + '"'])
def test_get_token_refresh_stores_an_unknown_expiry(
    flow_api: InProcessApi, endpoint: ScriptedTokenEndpoint, expires_in: str
) -> None:
    body: dict[str, Any] = {
        "name": f"absurd {time.time_ns()}",
        "client_id": "cid",
        "client_secret": "csecret",
        "authorization_url": "https://auth.example.com/authorize",
        "token_url": endpoint.url,
    }
    connection_id = flow_api.call("create_connection", body=body).json()["id"]
    expired = token_endpoint.TokenSet("access-old", "Bearer", "refresh-old", int(time.time()) - 10)
    tokens.store_connected(get_settings(), flow_api.tenant, connection_id, expired)
    endpoint.queue(body_with(expires_in, refresh_token="refresh-new"))
    event = {"tenant_id": flow_api.tenant, "connection_id": connection_id}
    result = load_handler("get_token")(event, LambdaContext())
    assert (result.get("access_token"), result.get("expires_at")) == ("absurd-access", None), result
    record = CONNECTIONS.load(flow_api.tenant, connection_id, consistent=True)
    assert record.status == "connected"
    assert cast(object, record.expires_at) is None
    assert cast(object, record.lease_owner) is None
    stored = tokens.decrypt_tokens(get_settings(), record)
    assert stored is not None and stored.refresh_token == "refresh-new"
