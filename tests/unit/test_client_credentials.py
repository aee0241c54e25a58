"""The client-credentials grant in-process, against the real oidc-provider: connecting without a browser,
retrieval, the scheduled re-fetch, and a secret the provider no longer accepts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import EventCapture, InProcessApi, LambdaContext, Resources, load_handler
from tests.support.provider import SERVICE_CLIENT_ID, SERVICE_CLIENT_SECRET, OidcProvider
from tests.unit.scheduled_helpers import RefreshQueue, age_tokens, emptied_queue, load, raw_item, stored_tokens, sweep

SCOPES = ["api.read", "api.write"]


def client_credentials_grants(provider: OidcProvider) -> dict[str, int]:
    """Outcomes of the provider's client_credentials token requests so far ({"success": n, ...})."""
    by_grant: dict[str, dict[str, int]] = provider.stats()["token_requests"]["by_grant_type_and_outcome"]
    return dict(by_grant.get("client_credentials", {}))


def get_token(tenant: str, connection_id: str, **fields: Any) -> dict[str, Any]:
    event = {"tenant_id": tenant, "connection_id": connection_id} | fields
    result: dict[str, Any] = load_handler("get_token")(event, LambdaContext())
    return result


def introspect(provider: OidcProvider, token: str) -> dict[str, Any]:
    return provider.introspect(token, SERVICE_CLIENT_ID, SERVICE_CLIENT_SECRET)


def create(api: InProcessApi, provider: OidcProvider, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"service account {time.time_ns()}",
        "grant_type": "client_credentials",
        "client_id": SERVICE_CLIENT_ID,
        "client_secret": SERVICE_CLIENT_SECRET,
        "token_url": provider.token_endpoint,
        "scopes": SCOPES,
    } | fields
    response = api.call("create_connection", body=body)
    assert response.status == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture
def queue(service_env: Resources) -> RefreshQueue:
    return emptied_queue(service_env.refresh_queue_url)


def test_client_credentials_connect_retrieve_refresh_and_refused_secret(
    flow_api: InProcessApi,
    provider: OidcProvider,
    queue: RefreshQueue,
    published_events: EventCapture,
    service_env: Resources,
) -> None:
    tenant = flow_api.tenant
    connection = create(flow_api, provider)
    connection_id = connection["id"]
    assert connection["status"] == "pending" and connection["grant_type"] == "client_credentials"

    # Connecting needs no browser: the service fetches a token at once.
    before = client_credentials_grants(provider)
    response = flow_api.call("start_authorization", connection_id=connection_id, body={})
    assert response.status == 200, response.text
    answer = response.json()
    assert answer["status"] == "connected"
    assert answer.get("redirect_url") is None
    expires = datetime.fromisoformat(answer["token_expires_at"])
    assert timedelta(minutes=9) < expires - datetime.now(UTC) <= timedelta(minutes=10)  # the provider's 600 s
    assert client_credentials_grants(provider).get("success", 0) == before.get("success", 0) + 1
    assert published_events.of("connection.connected", connection_id)
    view = flow_api.call("get_connection", connection_id=connection_id).json()
    assert view["status"] == "connected" and set(view["granted_scopes"]) == set(SCOPES)

    token = get_token(tenant, connection_id)
    assert set(token["scopes"]) == set(SCOPES)
    first = introspect(provider, token["access_token"])
    assert first["active"] is True
    assert first["client_id"] == SERVICE_CLIENT_ID
    assert set(first["scope"].split()) == set(SCOPES)
    assert stored_tokens(tenant, connection_id).refresh_token is None

    # The tokens live ten minutes, shorter than the refresh window: due halfway through their life.
    record = load(tenant, connection_id)
    assert record.due_at is not None and record.expires_at is not None and record.connected_at is not None
    assert abs((record.due_at - record.connected_at) - (record.expires_at - record.connected_at) / 2) < timedelta(
        seconds=1
    )
    age_tokens(tenant, connection_id, seconds=700)  # obtained long enough ago: past the middle, due
    record = load(tenant, connection_id)
    assert record.due_at <= datetime.now(UTC)
    before = client_credentials_grants(provider)
    sweep()
    drained = queue.drain(tenant)
    assert drained.processed == [connection_id] and drained.failures == []
    after = client_credentials_grants(provider)
    assert after.get("success", 0) == before.get("success", 0) + 1
    assert sum(after.values()) == sum(before.values()) + 1
    renewed = get_token(tenant, connection_id)
    assert renewed["access_token"] != token["access_token"]
    assert introspect(provider, renewed["access_token"])["active"] is True
    assert load(tenant, connection_id).refreshed_at is not None

    # A client secret the provider does not accept: the next scheduled refresh needs the tenant again.
    patched = flow_api.call("update_connection", connection_id=connection_id, body={"client_secret": "wrong-secret"})
    assert patched.status == 200, patched.text
    age_tokens(tenant, connection_id, seconds=700)
    sweep()
    drained = queue.drain(tenant)
    assert drained.processed == [connection_id] and drained.failures == []
    assert client_credentials_grants(provider).get("invalid_client", 0) == before.get("invalid_client", 0) + 1
    record = load(tenant, connection_id)
    assert record.status == "reauthorization_required"
    assert record.status_reason == "invalid_client"
    (event,) = published_events.of("connection.reauthorization_required", connection_id)
    assert event["detail"]["reason"] == "invalid_client"
    item = raw_item(service_env.table_name, tenant, connection_id)
    assert "due_shard" not in item and "due_at" not in item
    assert get_token(tenant, connection_id)["error"]["code"] == "reauthorization_required"
    sweep()
    assert queue.drain(tenant).processed == []

    # Connecting with the wrong secret is refused; the right one recovers the connection at once.
    refused = flow_api.call("start_authorization", connection_id=connection_id, body={})
    assert refused.status == 400, refused.text
    assert refused.json()["error"]["code"] == "invalid_client"
    assert load(tenant, connection_id).status == "reauthorization_required"
    fixed = flow_api.call(
        "update_connection", connection_id=connection_id, body={"client_secret": SERVICE_CLIENT_SECRET}
    )
    assert fixed.status == 200 and fixed.json()["status"] == "connected", fixed.text
    assert flow_api.call("start_authorization", connection_id=connection_id, body={}).json()["status"] == "connected"
    record = load(tenant, connection_id)
    assert record.status == "connected" and record.due_at is not None
    assert introspect(provider, get_token(tenant, connection_id)["access_token"])["active"] is True


def test_connecting_needs_no_request_body(flow_api: InProcessApi, provider: OidcProvider) -> None:
    """return_url is only for the browser of the authorization-code grant; a bare POST connects."""
    connection = create(flow_api, provider)
    response = flow_api.call("start_authorization", connection_id=connection["id"])
    assert response.status == 200, response.text
    assert response.json()["status"] == "connected"
    assert introspect(provider, get_token(flow_api.tenant, connection["id"])["access_token"])["active"] is True


def test_client_credentials_view_has_no_browser_settings(flow_api: InProcessApi, provider: OidcProvider) -> None:
    """PKCE and the callback belong to the browser flow: this grant shows them as null, in every view."""
    connection = create(flow_api, provider)
    assert connection["use_pkce"] is None and connection["redirect_uri"] is None
    fetched = flow_api.call("get_connection", connection_id=connection["id"]).json()
    assert fetched["use_pkce"] is None and fetched["redirect_uri"] is None
    listed = flow_api.call("list_connections", query={"limit": "100"}).json()["items"]
    assert [(item["use_pkce"], item["redirect_uri"]) for item in listed if item["id"] == connection["id"]] == [
        (None, None)
    ]
    switched = flow_api.call(
        "update_connection", connection_id=connection["id"], body={"grant_type": "authorization_code"}
    ).json()
    assert switched["use_pkce"] is True and switched["redirect_uri"].endswith("/oauth2/callback")


def test_openapi_document_says_the_browser_settings_may_be_null(flow_api: InProcessApi) -> None:
    document = flow_api.call("openapi").json()
    properties = document["components"]["schemas"]["ConnectionOut"]["properties"]
    for name in ("use_pkce", "redirect_uri"):
        assert {"type": "null"} in properties[name]["anyOf"], properties[name]
        assert "client_credentials" in properties[name]["description"]


def test_client_credentials_endpoint_from_issuer_discovery(flow_api: InProcessApi, provider: OidcProvider) -> None:
    connection = create(flow_api, provider, token_url=None, issuer=provider.issuer, scopes=["api.read"])
    assert connection["token_url"] == provider.token_endpoint
    response = flow_api.call("start_authorization", connection_id=connection["id"], body={})
    assert response.status == 200, response.text
    assert response.json()["status"] == "connected"
    token = get_token(flow_api.tenant, connection["id"])
    assert introspect(provider, token["access_token"])["scope"] == "api.read"


@pytest.mark.parametrize("secret", [None, SERVICE_CLIENT_SECRET], ids=["without-secret", "with-secret"])
def test_client_credentials_without_client_authentication_is_refused(
    flow_api: InProcessApi, provider: OidcProvider, secret: str | None
) -> None:
    body = {
        "name": f"public service {time.time_ns()}",
        "grant_type": "client_credentials",
        "client_id": SERVICE_CLIENT_ID,
        "token_url": provider.token_endpoint,
        "token_auth_method": "none",
    }
    if secret is not None:
        body["client_secret"] = secret
    response = flow_api.call("create_connection", body=body)
    assert response.status == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    if secret is None:
        assert "client_credentials grant needs client authentication" in response.text


def test_client_credentials_connection_cannot_drop_its_client_authentication(
    flow_api: InProcessApi, provider: OidcProvider
) -> None:
    connection = create(flow_api, provider)
    change = {"token_auth_method": "none", "client_secret": None}
    response = flow_api.call("update_connection", connection_id=connection["id"], body=change)
    assert response.status == 422, response.text
    assert "client_credentials grant needs client authentication" in response.text
    assert flow_api.call("get_connection", connection_id=connection["id"]).json()["token_auth_method"] == (
        "client_secret_basic"
    )
