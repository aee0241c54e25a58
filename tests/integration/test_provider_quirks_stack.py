"""Quirky providers through the local stack: the API creates the connection, the browser flow's callback
exchanges the code, GetTokenFunction (over the local Lambda endpoint) returns the token and the kept metadata
and refreshes, and a permanent error ends the grant. A scripted provider imposes each quirk on both the
exchange and the refresh; a forged regional host in the callback receives nothing.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from devstack import Stack
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import callback_url, get_token, new_tenant, query_of, start_authorization
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint

RETURN_URL = "http://127.0.0.1:8000/connections"  # an allowed frontend origin of the local stack
AUTHORIZE_AT = "https://provider.example.com/oauth/authorize"  # the browser would go here; we never call it
A_DAY = 86_400  # min_valid_seconds that makes any token due for refresh


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> ScriptedTokenEndpoint:
    running_endpoint.reset()
    return running_endpoint


def create(api: ApiClient, token_url: str, **settings: Any) -> str:
    body = {
        "name": f"quirky {time.time_ns()}",
        "client_id": "quirky-client",
        "client_secret": "quirky-secret",
        "token_auth_method": "client_secret_post",
        "authorization_url": AUTHORIZE_AT,
        "token_url": token_url,
        **settings,
    }
    created = api.post("/connections", json=body)
    assert created.status_code == 201, created.text
    connection_id: str = created.json()["id"]
    return connection_id


def callback(api: ApiClient, connection_id: str, **extra: str) -> dict[str, str]:
    """Walk the flow as a browser: our authorize redirect (it sets the flow's cookie), then the provider's
    redirect back to our callback with a code and `extra` query parameters. Returns the return URL's query."""
    browser = requests.Session()
    redirect = browser.get(start_authorization(api, connection_id, RETURN_URL), allow_redirects=False)
    assert redirect.status_code == 302 and redirect.headers["Location"].startswith(AUTHORIZE_AT), redirect.text
    state = query_of(redirect.headers["Location"])["state"]
    params = {"code": "the-code", "state": state, **extra}
    answer = browser.get(f"{callback_url(api.stack)}?{urlencode(params)}", allow_redirects=False)
    assert answer.status_code == 302, answer.text
    return query_of(answer.headers["Location"])


JSON_ONLY_QUIRKS = {
    "token_request_format": "json",
    "token_params": {"audience": "crm"},
    "refresh_params": {"account": "a1"},
    "access_token_path": "authed_user.access_token",
    "expires_in_unit": "milliseconds",
    "permanent_errors": ["invalid_refresh_token"],
    "response_metadata": [{"name": "team.id", "pattern": "^T[A-Z0-9]{2,20}$"}],
}
TEAM = {"ok": True, "team": {"id": "T42"}}


def connect_json_only(api: ApiClient, endpoint: ScriptedTokenEndpoint) -> str:
    connection_id = create(api, endpoint.url, refresh_url=endpoint.origin + "/refresh", quirks=JSON_ONLY_QUIRKS)
    endpoint.json_only = True
    endpoint.queue(
        Scripted(body=TEAM | {"authed_user": {"access_token": "u1", "refresh_token": "r1", "expires_in": 3_600_000}})
    )
    assert callback(api, connection_id)["status"] == "connected"
    return connection_id


def test_a_json_only_provider_with_a_nested_token_in_milliseconds_and_http_200_errors(
    stack: Stack, endpoint: ScriptedTokenEndpoint
) -> None:
    tenant = new_tenant("quirks")
    api = ApiClient(stack).as_tenant(tenant)
    connection_id = connect_json_only(api, endpoint)
    exchanged = endpoint.requests[-1]
    assert exchanged.path == "/token" and exchanged.is_json
    assert exchanged.form["code"] == "the-code" and exchanged.form["audience"] == "crm"
    assert exchanged.form["client_secret"] == "quirky-secret"

    token = get_token(stack, tenant, connection_id)
    assert token["access_token"] == "u1" and token["metadata"] == {"team.id": "T42"}
    assert api.get(f"/connections/{connection_id}").json()["metadata"] == {"team.id": "T42"}

    endpoint.queue(Scripted(body=TEAM | {"authed_user": {"access_token": "u2", "expires_in": 7_200_000}}))
    refreshed = get_token(stack, tenant, connection_id, min_valid_seconds=A_DAY - 7_000)
    assert refreshed.get("access_token") == "u2", refreshed
    refresh = endpoint.requests[-1]
    assert refresh.path == "/refresh" and refresh.is_json
    assert refresh.form["refresh_token"] == "r1" and refresh.form["account"] == "a1"

    endpoint.queue(Scripted(body={"ok": False, "error": "invalid_refresh_token"}))
    ended = get_token(stack, tenant, connection_id, min_valid_seconds=A_DAY)
    assert ended["error"]["code"] == "reauthorization_required"
    assert api.get(f"/connections/{connection_id}").json()["status_reason"] == "invalid_refresh_token"


def test_an_http_200_transient_error_keeps_the_grant(stack: Stack, endpoint: ScriptedTokenEndpoint) -> None:
    tenant = new_tenant("transient")
    api = ApiClient(stack).as_tenant(tenant)
    connection_id = connect_json_only(api, endpoint)
    endpoint.queue(Scripted(body={"ok": False, "error": "ratelimited"}))
    assert get_token(stack, tenant, connection_id, min_valid_seconds=A_DAY)["error"]["code"] == "provider_unavailable"
    assert endpoint.requests[-1].path == "/refresh"
    assert api.get(f"/connections/{connection_id}").json()["status"] == "connected"
    assert get_token(stack, tenant, connection_id)["access_token"] == "u1"


def regional_quirks(endpoint: ScriptedTokenEndpoint) -> dict[str, Any]:
    return {
        "callback_metadata": [
            {"name": "accounts-server", "use": "token_origin", "pattern": f"^{re.escape(endpoint.origin)}$"},
            {"name": "location", "pattern": "^[a-z]{2}$"},
        ],
        "response_metadata": [
            {"name": "api_domain", "use": "api_base", "pattern": r"^https://www\.zohoapis\.(com|eu)$"}
        ],
    }


def test_a_regional_token_host_from_the_callback_and_an_api_base_from_the_token(
    stack: Stack, endpoint: ScriptedTokenEndpoint
) -> None:
    tenant = new_tenant("regional")
    api = ApiClient(stack).as_tenant(tenant)
    # The template's token host is the global one; the callback names the user's regional one.
    connection_id = create(api, "https://accounts.zoho.com/oauth/v2/token", quirks=regional_quirks(endpoint))
    endpoint.queue(
        Scripted(
            body={
                "access_token": "z1",
                "refresh_token": "zr",
                "expires_in": 3600,
                "api_domain": "https://www.zohoapis.eu",
            }
        )
    )
    back = callback(api, connection_id, **{"accounts-server": endpoint.origin, "location": "eu"})
    assert back["status"] == "connected", back
    assert endpoint.requests[-1].path == "/oauth/v2/token"

    token = get_token(stack, tenant, connection_id)
    assert token["access_token"] == "z1" and token["api_base"] == "https://www.zohoapis.eu"
    assert token["metadata"] == {
        "accounts-server": endpoint.origin,
        "location": "eu",
        "api_domain": "https://www.zohoapis.eu",
    }
    endpoint.queue(Scripted(body={"access_token": "z2", "expires_in": 3600}))
    assert get_token(stack, tenant, connection_id, min_valid_seconds=A_DAY - 100)["access_token"] == "z2"
    assert [r.path for r in endpoint.requests[-2:]] == ["/oauth/v2/token", "/oauth/v2/token"]


@pytest.mark.parametrize(
    "forged",
    [
        "https://accounts.zoho.evil.example",
        "http://127.0.0.1:9",  # a loopback port the pattern does not name
        "http://10.0.0.1",
        "http://user@127.0.0.1",
    ],
)
def test_a_forged_regional_host_receives_nothing(stack: Stack, endpoint: ScriptedTokenEndpoint, forged: str) -> None:
    api = ApiClient(stack).as_tenant(new_tenant("forged"))
    connection_id = create(api, endpoint.url, quirks=regional_quirks(endpoint))
    back = callback(api, connection_id, **{"accounts-server": forged})
    assert back["status"] == "error" and back["error"] == "invalid_metadata", back
    assert endpoint.requests == []
    assert api.get(f"/connections/{connection_id}").json()["status"] == "pending"


def test_private_key_jwt_through_the_stack(stack: Stack, endpoint: ScriptedTokenEndpoint) -> None:
    """A client-credentials connection authenticated by a private key and its certificate's thumbprint: the
    provider verifies each assertion with the registered public key, matches the key by its x5t#S256 header
    and sees a new jti on every request."""
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048)
    thumbprint = "NDVmNzQ1MmI3ZjE3ZTNiNzA4YjUwNzU5ZTY1MDg2MDQ"
    seen: list[str] = []

    def verify(request: Any) -> Scripted | None:
        decoded = jwt.decode(request.form["client_assertion"], key, algorithms=["RS256"])
        claims = decoded.claims
        if decoded.header.get("x5t#S256") != thumbprint:
            return Scripted(401, {"error": "invalid_client", "error_description": "unknown certificate"})
        if claims["aud"] != endpoint.url or claims["jti"] in seen or claims["exp"] - claims["iat"] > 60:
            return Scripted(401, {"error": "invalid_client"})
        seen.append(claims["jti"])
        return None

    endpoint.verify = verify
    try:
        tenant = new_tenant("assertion")
        api = ApiClient(stack).as_tenant(tenant)
        created = api.post(
            "/connections",
            json={
                "name": f"signed {time.time_ns()}",
                "grant_type": "client_credentials",
                "client_id": "cid",
                "client_secret": key.as_pem(private=True).decode(),
                "certificate_thumbprint": thumbprint,
                "token_auth_method": "private_key_jwt",
                "token_url": endpoint.url,
            },
        )
        assert created.status_code == 201, created.text
        assert "PRIVATE KEY" not in created.text and thumbprint not in created.text
        assert created.json()["has_certificate_thumbprint"] is True
        connection_id = created.json()["id"]
        endpoint.queue(Scripted(body={"access_token": "s1", "expires_in": 3600}))
        connected = api.post(f"/connections/{connection_id}/authorize", json={})
        assert connected.status_code == 200 and connected.json()["status"] == "connected", connected.text
        endpoint.queue(Scripted(body={"access_token": "s2", "expires_in": 3600}))
        assert get_token(stack, tenant, connection_id, min_valid_seconds=A_DAY)["access_token"] == "s2"
        assert len(seen) == 2 and len(set(seen)) == 2
        assert all("client_secret" not in r.form for r in endpoint.requests)
    finally:
        endpoint.verify = None
