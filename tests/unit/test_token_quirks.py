"""Provider quirks on the token endpoint, each imposed by a scripted provider on the exchange and the refresh."""

from __future__ import annotations

import pytest

from oauth_connections.oauth import token_endpoint
from oauth_connections.oauth.token_endpoint import MetadataRule, Quirks
from oauth_connections.security.netguard import UrlPolicy
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint

LOOPBACK = UrlPolicy(allow_insecure_loopback=True)
LOOPBACK_ORIGIN = r"^http://127\.0\.0\.1:[0-9]{1,5}$"


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> ScriptedTokenEndpoint:
    running_endpoint.reset()
    return running_endpoint


def client(token_url: str, quirks: Quirks, method: str = "client_secret_post") -> token_endpoint.ClientSettings:
    return token_endpoint.ClientSettings(
        client_id="cid", client_secret="csecret", token_url=token_url, auth_method=method, quirks=quirks
    )


def exchange(
    settings: token_endpoint.ClientSettings, callback_metadata: dict[str, str] | None = None
) -> token_endpoint.TokenSet:
    return token_endpoint.exchange_code(
        settings,
        code="the-code",
        redirect_uri="https://api.example.com/oauth2/callback",
        code_verifier=None,
        policy=LOOPBACK,
        timeout=5.0,
        callback_metadata=callback_metadata,
    )


def refresh(settings: token_endpoint.ClientSettings, current: token_endpoint.TokenSet) -> token_endpoint.TokenSet:
    return token_endpoint.refresh(settings, current, policy=LOOPBACK, timeout=5.0)


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_a_json_only_endpoint_gets_json_bodies_with_the_extra_parameters(
    endpoint: ScriptedTokenEndpoint, method: str
) -> None:
    endpoint.json_only = True
    quirks = Quirks(
        token_request_format="json",
        token_params={"audience": "crm", "grant_type": "password"},
        refresh_params={"redirect_uri": "https://evil.example/", "account": "a1"},
    )
    settings = client(endpoint.url, quirks, method)
    endpoint.queue(Scripted(body={"access_token": "a1", "refresh_token": "r1", "expires_in": 60}))
    first = exchange(settings)
    endpoint.queue(Scripted(body={"access_token": "a2", "expires_in": 60}))
    second = refresh(settings, first)

    exchanged, refreshed = endpoint.requests
    assert exchanged.is_json and refreshed.is_json
    assert exchanged.form["grant_type"] == "authorization_code"
    assert exchanged.form["code"] == "the-code"
    assert exchanged.form["audience"] == "crm"
    assert refreshed.form["grant_type"] == "refresh_token"
    assert refreshed.form["refresh_token"] == "r1"
    assert refreshed.form["account"] == "a1"
    assert "redirect_uri" not in refreshed.form  # a protocol parameter is never taken from the quirks
    if method == "client_secret_post":
        assert exchanged.form["client_secret"] == "csecret"
        assert "Authorization" not in exchanged.headers
    else:
        assert "client_secret" not in exchanged.form
        assert exchanged.headers["Authorization"].startswith("Basic ")
    assert (first.access_token, second.access_token, second.refresh_token) == ("a1", "a2", "r1")


def test_form_requests_carry_the_extra_parameters_and_refresh_at_the_refresh_url(
    endpoint: ScriptedTokenEndpoint,
) -> None:
    quirks = Quirks(
        token_params={"audience": "crm"},
        refresh_params={"client_id": "forged", "account": "a1"},
        refresh_url=endpoint.origin + "/refresh",
    )
    settings = client(endpoint.url, quirks)
    endpoint.queue(Scripted(body={"access_token": "a1", "refresh_token": "r1"}))
    first = exchange(settings)
    endpoint.queue(Scripted(body={"access_token": "a2", "refresh_token": "r2"}))
    refresh(settings, first)

    exchanged, refreshed = endpoint.requests
    assert (exchanged.path, refreshed.path) == ("/token", "/refresh")
    assert not exchanged.is_json
    assert exchanged.form["audience"] == "crm"
    assert refreshed.form["account"] == "a1"
    assert refreshed.form["client_id"] == "cid"


def test_a_nested_token_with_a_lifetime_in_milliseconds(endpoint: ScriptedTokenEndpoint) -> None:
    quirks = Quirks(access_token_path="authed_user.access_token", expires_in_unit="milliseconds")
    settings = client(endpoint.url, quirks)
    nested = {"ok": True, "access_token": "xoxb-bot", "authed_user": {"access_token": "xoxp-user"}}
    endpoint.queue(
        Scripted(body=nested | {"authed_user": {"access_token": "u1", "refresh_token": "r1", "expires_in": 3_600_000}})
    )
    first = exchange(settings)
    endpoint.queue(Scripted(body=nested | {"authed_user": {"access_token": "u2", "expires_in": 7_200_000}}))
    second = refresh(settings, first)

    assert (first.access_token, first.refresh_token) == ("u1", "r1")
    assert first.expires_at is not None and 3590 <= first.expires_at - _now() <= 3600
    assert second.access_token == "u2"
    assert second.expires_at is not None and 7190 <= second.expires_at - _now() <= 7200


def _now() -> int:
    import time

    return int(time.time())


@pytest.mark.parametrize(
    ("body", "permanent"),
    [
        ({"ok": False, "error": "invalid_refresh_token"}, True),
        ({"ok": False, "error": "ratelimited"}, False),
        ({"ok": False}, False),
    ],
)
def test_http_200_errors_end_the_grant_only_when_declared_permanent(
    endpoint: ScriptedTokenEndpoint, body: dict[str, object], permanent: bool
) -> None:
    settings = client(endpoint.url, Quirks(permanent_errors=frozenset({"invalid_refresh_token"})))
    endpoint.queue(Scripted(200, body))
    with pytest.raises(token_endpoint.ProviderRejectedError) as refused:
        exchange(settings)
    assert refused.value.permanent is permanent
    current = token_endpoint.TokenSet(access_token="a", token_type="Bearer", refresh_token="r")
    endpoint.queue(Scripted(200, body))
    with pytest.raises(token_endpoint.ProviderRejectedError) as refused_refresh:
        refresh(settings, current)
    assert refused_refresh.value.error == body.get("error", "provider_error")
    assert refused_refresh.value.permanent is permanent


INSTANCE = MetadataRule("instance_url", r"^https://[a-z0-9-]+\.my\.salesforce\.com$", "api_base")
TEAM = MetadataRule("team.id", r"^T[A-Z0-9]{2,20}$")


def test_response_metadata_is_kept_on_exchange_and_refresh(endpoint: ScriptedTokenEndpoint) -> None:
    settings = client(endpoint.url, Quirks(response_metadata=(INSTANCE, TEAM)))
    endpoint.queue(
        Scripted(
            body={
                "access_token": "a1",
                "refresh_token": "r1",
                "instance_url": "https://acme.my.salesforce.com",
                "team": {"id": "T123"},
                "signature": "not kept",
            }
        )
    )
    first = exchange(settings)
    assert first.metadata == {"instance_url": "https://acme.my.salesforce.com", "team.id": "T123"}
    endpoint.queue(Scripted(body={"access_token": "a2", "instance_url": "https://other.my.salesforce.com"}))
    second = refresh(settings, first)
    assert second.metadata == {"instance_url": "https://other.my.salesforce.com", "team.id": "T123"}
    assert token_endpoint.TokenSet.from_json(second.to_json()).metadata == second.metadata


@pytest.mark.parametrize(
    "forged",
    [
        "https://acme.my.salesforce.com.evil.example",
        "https://evil.example/?x=.my.salesforce.com",
        "http://acme.my.salesforce.com",
    ],
)
def test_a_forged_response_value_fails_the_exchange_and_is_dropped_on_refresh(
    endpoint: ScriptedTokenEndpoint, forged: str
) -> None:
    settings = client(endpoint.url, Quirks(response_metadata=(INSTANCE,)))
    endpoint.queue(Scripted(body={"access_token": "a1", "refresh_token": "r1", "instance_url": forged}))
    with pytest.raises(token_endpoint.MetadataRefusedError):
        exchange(settings)
    current = token_endpoint.TokenSet(
        access_token="a",
        token_type="Bearer",
        refresh_token="r",
        metadata={"instance_url": "https://acme.my.salesforce.com"},
    )
    endpoint.queue(Scripted(body={"access_token": "a2", "refresh_token": "r2", "instance_url": forged}))
    fresh = refresh(settings, current)
    assert fresh.refresh_token == "r2"  # the rotated refresh token is never lost over a bad value
    assert fresh.metadata == {"instance_url": "https://acme.my.salesforce.com"}


def test_a_regional_token_host_from_the_callback_receives_the_exchange_and_the_refresh(
    endpoint: ScriptedTokenEndpoint,
) -> None:
    region = MetadataRule("accounts-server", LOOPBACK_ORIGIN, "token_origin")
    location = MetadataRule("location", r"^[a-z]{2}$")
    quirks = Quirks(callback_metadata=(region, location))
    settings = client("https://accounts.zoho.com/oauth/v2/token", quirks)
    kept = token_endpoint.keep_callback_metadata(
        quirks, {"accounts-server": endpoint.origin, "location": "eu", "code": "c"}, LOOPBACK
    )
    endpoint.queue(Scripted(body={"access_token": "a1", "refresh_token": "r1"}))
    first = exchange(settings, kept)
    endpoint.queue(Scripted(body={"access_token": "a2"}))
    second = refresh(settings, first)
    assert [r.path for r in endpoint.requests] == ["/oauth/v2/token", "/oauth/v2/token"]
    assert second.metadata == {"accounts-server": endpoint.origin, "location": "eu"}


@pytest.mark.parametrize(
    ("pattern", "forged"),
    [
        (r"^https://accounts\.zoho\.(com|eu)$", "https://accounts.zoho.evil.example"),
        (r"^https://accounts\.zoho\.(com|eu)$", "https://accounts.zoho.eu.evil.example"),
        (r"^https://.+$", "https://10.0.0.1"),
        (r"^https://.+$", "https://169.254.169.254"),
        (r"^https://.+$", "https://user:pw@accounts.zoho.eu"),
        (r"^https://.+$", "https://accounts.zoho.eu/?next=x"),
    ],
)
def test_a_forged_regional_host_is_refused_before_anything_is_sent(
    endpoint: ScriptedTokenEndpoint, pattern: str, forged: str
) -> None:
    quirks = Quirks(callback_metadata=(MetadataRule("accounts-server", pattern, "token_origin"),))
    with pytest.raises(token_endpoint.MetadataRefusedError):
        token_endpoint.keep_callback_metadata(quirks, {"accounts-server": forged}, UrlPolicy())
    settings = client(endpoint.url, quirks)
    current = token_endpoint.TokenSet(
        access_token="a", token_type="Bearer", refresh_token="r", metadata={"accounts-server": forged}
    )
    with pytest.raises(token_endpoint.MetadataRefusedError):
        refresh(settings, current)  # a stored value is checked again before every use
    assert endpoint.requests == []
