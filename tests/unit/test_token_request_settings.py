"""Token request settings some providers need: placeholders in the extra body parameters ({redirect_uri} on
a refresh, {callback.<name>} for a value the callback carried) and extra headers on every token request,
imposed by a scripted provider on the exchange and the refresh; and the 422s that keep them to their room."""

from __future__ import annotations

from typing import Any

import pytest

from oauth_connections.oauth import token_endpoint
from oauth_connections.oauth.token_endpoint import MetadataRule, Quirks, TokenSet
from oauth_connections.security.netguard import UrlPolicy
from tests.conftest import InProcessApi
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint

LOOPBACK = UrlPolicy(allow_insecure_loopback=True)
REDIRECT_URI = "https://api.example.com/oauth2/callback"
DEVICE = MetadataRule("device_id", r"^[A-Za-z0-9_-]{1,200}$")
TOKENS = {"access_token": "a1", "refresh_token": "r1", "expires_in": 3600}


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> ScriptedTokenEndpoint:
    running_endpoint.reset()
    return running_endpoint


def client(endpoint: ScriptedTokenEndpoint, quirks: Quirks) -> token_endpoint.ClientSettings:
    return token_endpoint.ClientSettings(
        client_id="cid", client_secret="cs", token_url=endpoint.url, auth_method="client_secret_post", quirks=quirks
    )


def exchange(settings: token_endpoint.ClientSettings, kept: dict[str, str] | None = None) -> TokenSet:
    return token_endpoint.exchange_code(
        settings,
        code="the-code",
        redirect_uri=REDIRECT_URI,
        code_verifier=None,
        policy=LOOPBACK,
        timeout=5.0,
        callback_metadata=kept,
    )


@pytest.mark.parametrize("request_format", ["form", "json"])
def test_placeholders_and_headers_on_the_exchange_and_the_refresh(
    endpoint: ScriptedTokenEndpoint, request_format: Any
) -> None:
    quirks = Quirks(
        token_request_format=request_format,
        token_params={"device_id": "{callback.device_id}", "return_to": "{redirect_uri}"},
        refresh_params={"redirect_uri": "{redirect_uri}", "device_id": "{callback.device_id}"},
        token_headers={"Notion-Version": "2022-06-28"},
        callback_metadata=(DEVICE,),
    )
    settings = client(endpoint, quirks)
    endpoint.queue(Scripted(body=TOKENS), Scripted(body=TOKENS | {"access_token": "a2"}))
    first = exchange(settings, {"device_id": "dev-1"})
    assert first.redirect_uri == REDIRECT_URI
    assert TokenSet.from_json(first.to_json()).redirect_uri == REDIRECT_URI  # kept with the tokens
    refreshed = token_endpoint.refresh(settings, TokenSet.from_json(first.to_json()), policy=LOOPBACK, timeout=5.0)
    assert refreshed.access_token == "a2" and refreshed.redirect_uri == REDIRECT_URI
    exchanged, refresh = endpoint.requests
    assert exchanged.form["device_id"] == "dev-1" and exchanged.form["return_to"] == REDIRECT_URI
    assert exchanged.form["redirect_uri"] == REDIRECT_URI and exchanged.form["code"] == "the-code"
    assert refresh.form["grant_type"] == "refresh_token" and refresh.form["refresh_token"] == "r1"
    assert refresh.form["redirect_uri"] == REDIRECT_URI and refresh.form["device_id"] == "dev-1"
    for recorded in (exchanged, refresh):
        assert recorded.headers["Notion-Version"] == "2022-06-28"
        assert recorded.is_json == (request_format == "json")
        assert recorded.headers["Accept"] == "application/json"


def test_a_placeholder_without_a_value_leaves_its_parameter_out(endpoint: ScriptedTokenEndpoint) -> None:
    quirks = Quirks(refresh_params={"redirect_uri": "{redirect_uri}", "device_id": "{callback.device_id}"})
    endpoint.queue(Scripted(body=TOKENS))
    token_endpoint.refresh(
        client(endpoint, quirks), TokenSet("a", "Bearer", refresh_token="r"), policy=LOOPBACK, timeout=5.0
    )
    (refresh,) = endpoint.requests
    assert "redirect_uri" not in refresh.form and "device_id" not in refresh.form


def test_the_protocols_headers_are_never_a_quirks(endpoint: ScriptedTokenEndpoint) -> None:
    """Stored settings are validated when set; the engine still never lets one replace its own headers."""
    quirks = Quirks(token_headers={"Authorization": "Bearer stolen", "Host": "evil.example", "X-Tenant": "t1"})
    endpoint.queue(Scripted(body=TOKENS))
    exchange(client(endpoint, quirks))
    (exchanged,) = endpoint.requests
    assert "Authorization" not in exchanged.headers and exchanged.headers["Host"].startswith("127.0.0.1:")
    assert exchanged.headers["X-Tenant"] == "t1"


def connection(**quirks: Any) -> dict[str, Any]:
    return {
        "name": "settings",
        "client_id": "c",
        "client_secret": "s",
        "token_url": "https://login.example.com/token",
        "authorization_url": "https://login.example.com/authorize",
        "quirks": quirks,
    }


@pytest.mark.parametrize(
    ("quirks", "message"),
    [
        ({"token_headers": {"Authorization": "Basic x"}}, "authorization"),
        ({"token_headers": {"host": "evil.example"}}, "host"),
        ({"token_headers": {"Content-Type": "text/plain"}}, "content-type"),
        ({"token_headers": {"Content-Length": "0"}}, "content-length"),
        ({"token_headers": {"Cookie": "a=b"}}, "cookie"),
        ({"token_headers": {"Proxy-Authorization": "x"}}, "proxy-authorization"),
        ({"token_headers": {"Sec-Fetch-Site": "none"}}, "sec-fetch-site"),
        ({"token_headers": {"X-Evil": "a\r\nHost: evil.example"}}, "token_headers.X-Evil"),
        ({"token_headers": {"Bad Name": "x"}}, "token_headers.Bad Name"),
        ({"refresh_params": {"redirect_uri": "https://evil.example/cb"}}, "redirect_uri"),
        ({"token_params": {"client_secret": "{redirect_uri}"}}, "client_secret"),
        ({"token_params": {"x": "{secret}"}}, "{redirect_uri} or {callback.<name>}"),
        ({"refresh_params": {"device_id": "{callback.device_id}"}}, "no callback_metadata"),
    ],
)
def test_bad_token_request_settings_are_a_422(api: InProcessApi, quirks: dict[str, Any], message: str) -> None:
    response = api.call("create_connection", body=connection(**quirks))
    assert response.status == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert message in response.text
    assert "evil.example" not in response.text


def test_good_token_request_settings_are_kept_and_shown(api: InProcessApi) -> None:
    quirks = {
        "token_params": {"device_id": "{callback.device_id}"},
        "refresh_params": {"redirect_uri": "{redirect_uri}", "device_id": "{callback.device_id}"},
        "token_headers": {"Notion-Version": "2022-06-28"},
        "callback_metadata": [{"name": "device_id", "pattern": DEVICE.pattern}],
    }
    created = api.call("create_connection", body=connection(**quirks))
    assert created.status == 201, created.text
    shown = created.json()["quirks"]
    assert shown["token_headers"] == {"Notion-Version": "2022-06-28"}
    assert shown["refresh_params"] == quirks["refresh_params"]
