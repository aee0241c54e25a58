"""The authorization-code flow in-process, against the real oidc-provider and its own login pages."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from tests.conftest import EventCapture, InProcessApi, Resources
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.support.user_agent import walk_authorization
from tests.unit.flow_helpers import (
    CALLBACK,
    CLIENTS,
    RETURN_URL,
    callback,
    connect,
    create_connection,
    error_of,
    open_redirect_url,
    snapshot,
    start,
    stored_item,
)


@pytest.mark.parametrize("method", sorted(CLIENTS))
def test_connects_with_each_client_type(
    flow_api: InProcessApi, provider: OidcProvider, published_events: EventCapture, service_env: Resources, method: str
) -> None:
    connection = create_connection(flow_api, provider, method)
    assert connection["authorization_url"] == provider.authorization_endpoint
    assert connection["token_url"] == provider.token_endpoint
    assert connection["revocation_url"] == provider.revocation_endpoint
    redirect = open_redirect_url(flow_api, start(flow_api, connection["id"]))
    query = parse_qs(urlsplit(redirect.location).query)
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == [CALLBACK]
    assert query["scope"] == ["api.read api.write"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["state"][0]) >= 22  # >= 128 bits
    result = walk_authorization(redirect.location)
    assert result.code
    assert result.iss == provider.issuer

    response = callback(flow_api, result, redirect.cookie)
    assert response.status == 302
    back = urlsplit(response.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == RETURN_URL.split("?")[0]
    assert parse_qs(back.query) == {"tab": ["crm"], "status": ["connected"], "connection_id": [connection["id"]]}
    assert result.code not in response.headers["Location"]

    view = flow_api.call("get_connection", connection_id=connection["id"]).json()
    assert view["status"] == "connected"
    assert set(view["granted_scopes"]) == {"api.read", "api.write"}
    assert view["expires_at"] is not None and view["connected_at"] is not None

    from oauth_connections.connections import tokens
    from oauth_connections.core.config import get_settings
    from oauth_connections.storage.connections import CONNECTIONS

    record = CONNECTIONS.load(flow_api.tenant, connection["id"])
    token_set = tokens.decrypt_tokens(get_settings(), record)
    assert token_set is not None and token_set.refresh_token
    introspection = provider.introspect(token_set.access_token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)
    assert introspection["active"] is True
    assert introspection["client_id"] == CLIENTS[method][0]
    raw = repr(stored_item(service_env, flow_api.tenant, connection["id"]))
    assert token_set.access_token not in raw and token_set.refresh_token not in raw
    assert published_events.of("connection.connected", connection["id"])


# ------------------------------------------------------------------ negative paths


def test_replayed_callback_is_refused(flow_api: InProcessApi, provider: OidcProvider, service_env: Resources) -> None:
    connection = create_connection(flow_api, provider)
    redirect = open_redirect_url(flow_api, start(flow_api, connection["id"]))
    result = walk_authorization(redirect.location)
    assert callback(flow_api, result, redirect.cookie).status == 302
    before = snapshot(service_env, flow_api.tenant, connection["id"])
    replay = callback(flow_api, result, redirect.cookie)
    assert error_of(replay)["error"] == "state_already_used"
    assert snapshot(service_env, flow_api.tenant, connection["id"]) == before


def test_redirect_url_is_single_use(flow_api: InProcessApi, provider: OidcProvider) -> None:
    connection = create_connection(flow_api, provider)
    redirect_url = start(flow_api, connection["id"])
    open_redirect_url(flow_api, redirect_url)
    handle = parse_qs(urlsplit(redirect_url).query)["flow"][0]
    again = flow_api.call("authorize_redirect", query={"flow": handle})
    assert again.status == 400
    assert "text/html" in again.headers["Content-Type"]
    assert again.cookies == []


def _expire(resources: Resources, prefix: str) -> None:
    table = boto3.resource("dynamodb").Table(resources.table_name)
    past = "2020-01-01T00:00:00.000000+0000"
    for item in table.scan()["Items"]:
        if str(item["pk"]).startswith(prefix) and item.get("status") in ("created", "redirected"):
            table.update_item(
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET expires_at = :p",
                ExpressionAttributeValues={":p": past},
            )


def test_expired_state_is_refused_before_the_ttl_sweeper(
    flow_api: InProcessApi, provider: OidcProvider, service_env: Resources
) -> None:
    connection = create_connection(flow_api, provider)
    redirect = open_redirect_url(flow_api, start(flow_api, connection["id"]))
    result = walk_authorization(redirect.location)
    _expire(service_env, "STATE#")
    assert error_of(callback(flow_api, result, redirect.cookie))["error"] == "expired_state"
    assert snapshot(service_env, flow_api.tenant, connection["id"])["status"] == {"S": "pending"}


def test_expired_redirect_url_is_refused(
    flow_api: InProcessApi, provider: OidcProvider, service_env: Resources
) -> None:
    connection = create_connection(flow_api, provider)
    redirect_url = start(flow_api, connection["id"])
    _expire(service_env, "FLOW#")
    handle = parse_qs(urlsplit(redirect_url).query)["flow"][0]
    response = flow_api.call("authorize_redirect", query={"flow": handle})
    assert response.status == 400
    assert "expired" in response.text


def test_callback_without_the_binding_cookie_is_refused(
    flow_api: InProcessApi, provider: OidcProvider, service_env: Resources
) -> None:
    connection = create_connection(flow_api, provider)
    redirect = open_redirect_url(flow_api, start(flow_api, connection["id"]))
    result = walk_authorization(redirect.location)
    assert error_of(callback(flow_api, result, None))["error"] == "browser_mismatch"
    name = redirect.cookie.split("=")[0]
    assert error_of(callback(flow_api, result, f"{name}=forged"))["error"] == "browser_mismatch"
    assert snapshot(service_env, flow_api.tenant, connection["id"])["status"] == {"S": "pending"}


def test_state_of_one_tenant_cannot_complete_another_tenants_connection(
    flow_api: InProcessApi, provider: OidcProvider, service_env: Resources
) -> None:
    mine = create_connection(flow_api, provider)
    other_api = flow_api.as_tenant(f"{flow_api.tenant}-other")
    theirs = create_connection(other_api, provider)
    # Starting a flow for another tenant's connection is a 404, as for any other route.
    refused = other_api.call("start_authorization", connection_id=mine["id"], body={"return_url": RETURN_URL})
    assert refused.status == 404
    # A state issued for my connection completes my connection only, never theirs.
    redirect = open_redirect_url(flow_api, start(flow_api, mine["id"]))
    assert callback(flow_api, walk_authorization(redirect.location), redirect.cookie).status == 302
    assert snapshot(service_env, other_api.tenant, theirs["id"])["status"] == {"S": "pending"}
    assert snapshot(service_env, flow_api.tenant, mine["id"])["status"] == {"S": "connected"}


def test_access_denied(flow_api: InProcessApi, provider: OidcProvider, service_env: Resources) -> None:
    connection = create_connection(flow_api, provider)
    redirect = open_redirect_url(flow_api, start(flow_api, connection["id"]))
    result = walk_authorization(redirect.location, approve=False)
    assert result.error == "access_denied"
    error = error_of(callback(flow_api, result, redirect.cookie))
    assert error["error"] == "access_denied"
    assert error["error_description"]
    assert snapshot(service_env, flow_api.tenant, connection["id"])["status"] == {"S": "pending"}


def test_failed_reauthorization_keeps_working_tokens(
    flow_api: InProcessApi, provider: OidcProvider, service_env: Resources
) -> None:
    connection = create_connection(flow_api, provider)
    connect(flow_api, provider, connection)
    before = snapshot(service_env, flow_api.tenant, connection["id"])
    assert before["status"] == {"S": "connected"}
    redirect = open_redirect_url(flow_api, start(flow_api, connection["id"]))
    result = walk_authorization(redirect.location, approve=False)
    assert error_of(callback(flow_api, result, redirect.cookie))["error"] == "access_denied"
    assert snapshot(service_env, flow_api.tenant, connection["id"]) == before


def test_wrong_client_secret(flow_api: InProcessApi, provider: OidcProvider, service_env: Resources) -> None:
    connection = create_connection(flow_api, provider, client_secret="not-the-secret")
    redirect = open_redirect_url(flow_api, start(flow_api, connection["id"]))
    error = error_of(callback(flow_api, walk_authorization(redirect.location), redirect.cookie))
    assert error["error"] == "invalid_client"
    assert "not-the-secret" not in str(error)
    assert snapshot(service_env, flow_api.tenant, connection["id"])["status"] == {"S": "pending"}


def test_provider_unreachable(flow_api: InProcessApi, provider: OidcProvider, service_env: Resources) -> None:
    from tests.conftest import free_port

    connection = create_connection(flow_api, provider, token_url=f"http://127.0.0.1:{free_port()}/token")
    redirect = open_redirect_url(flow_api, start(flow_api, connection["id"]))
    error = error_of(callback(flow_api, walk_authorization(redirect.location), redirect.cookie))
    assert error["error"] == "provider_unavailable"
    assert snapshot(service_env, flow_api.tenant, connection["id"])["status"] == {"S": "pending"}


@pytest.mark.parametrize(("iss", "code"), [("http://evil.example.com", "issuer_mismatch"), (None, "issuer_missing")])
def test_issuer_is_checked(
    flow_api: InProcessApi, provider: OidcProvider, service_env: Resources, iss: str | None, code: str
) -> None:
    connection = create_connection(flow_api, provider)
    redirect = open_redirect_url(flow_api, start(flow_api, connection["id"]))
    result = walk_authorization(redirect.location)
    query = dict(result.query)
    if iss is None:
        query.pop("iss")
    else:
        query["iss"] = iss
    response = flow_api.call("oauth_callback", query=query, cookies=[redirect.cookie])
    assert error_of(response)["error"] == code
    assert snapshot(service_env, flow_api.tenant, connection["id"])["status"] == {"S": "pending"}


@pytest.mark.parametrize(
    "return_url",
    [
        "https://evil.example.com/",
        "https://app.example.com.evil.com/",
        "https://app.example.com@evil.com/",
        "//evil.com/",
        "javascript:alert(1)",
        "https://app.example.com:8443/",
        "http://app.example.com/",
        "https://app.example.com/#fragment",
        "https://app.example.com\\@evil.com/",
        "",
    ],
)
def test_return_url_outside_allowed_origins(flow_api: InProcessApi, provider: OidcProvider, return_url: str) -> None:
    connection = create_connection(flow_api, provider)
    response = flow_api.call("start_authorization", connection_id=connection["id"], body={"return_url": return_url})
    assert response.status in (400, 422)
    assert response.json()["error"]["code"] in ("invalid_return_url", "validation_error")


@pytest.mark.parametrize("body", [None, {}, {"return_url": None}], ids=["no-body", "empty-body", "null"])
def test_authorization_code_without_return_url_is_return_url_required(
    flow_api: InProcessApi, provider: OidcProvider, body: dict[str, None] | None
) -> None:
    """A missing return_url is named as missing, not as one outside the allowed origins."""
    connection = create_connection(flow_api, provider)
    response = flow_api.call("start_authorization", connection_id=connection["id"], body=body)
    assert response.status == 400, response.text
    assert response.json()["error"]["code"] == "return_url_required"
    assert "redirect_url" not in response.text


def test_unknown_state_shows_an_error_page(flow_api: InProcessApi) -> None:
    response = flow_api.call("oauth_callback", query={"code": "x", "state": "never-issued"})
    assert response.status == 400
    assert "text/html" in response.headers["Content-Type"]
    assert "Location" not in response.headers
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    missing = flow_api.call("oauth_callback", query={"error": "access_denied"})
    assert missing.status == 400
