"""Editing a connection in-process, against the real provider: which edits end the grant, where a stored
client secret may go, flows and refreshes that began before an edit, and recovery with a new secret."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from oauth_connections.connections import grants, tokens
from oauth_connections.core.config import get_settings
from oauth_connections.core.errors import ConflictError
from oauth_connections.oauth import token_endpoint
from oauth_connections.storage.connections import CONNECTIONS
from tests.conftest import ApiResponse, EventCapture, InProcessApi, LambdaContext, Resources, load_handler
from tests.support.capture_server import CaptureServer
from tests.support.provider import (
    BASIC_CLIENT_ID,
    BASIC_CLIENT_SECRET,
    POST_CLIENT_ID,
    POST_CLIENT_SECRET,
    OidcProvider,
)
from tests.support.token_proxy import HoldingTokenProxy
from tests.support.user_agent import walk_authorization
from tests.unit.flow_helpers import (
    callback,
    connect,
    create_connection,
    error_of,
    open_redirect_url,
    start,
    stored_item,
)

NEW_SECRET = "a-secret-entered-for-the-new-host"


def get_token(tenant: str, connection_id: str, **fields: Any) -> dict[str, Any]:
    event = {"tenant_id": tenant, "connection_id": connection_id} | fields
    result: dict[str, Any] = load_handler("get_token")(event, LambdaContext())
    return result


def patch(api: InProcessApi, connection_id: str, body: dict[str, Any]) -> ApiResponse:
    return api.call("update_connection", connection_id=connection_id, body=body)


def stored_tokens(tenant: str, connection_id: str) -> token_endpoint.TokenSet:
    token_set = tokens.decrypt_tokens(get_settings(), CONNECTIONS.load(tenant, connection_id, consistent=True))
    assert token_set is not None
    return token_set


def active(provider: OidcProvider, token: str | None) -> bool:
    return bool(provider.introspect(token or "", BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"])


def token_outcomes(provider: OidcProvider, grant_type: str = "refresh_token") -> dict[str, int]:
    by_grant: dict[str, dict[str, int]] = provider.stats()["token_requests"]["by_grant_type_and_outcome"]
    return dict(by_grant.get(grant_type, {}))


def revocations(provider: OidcProvider) -> int:
    return int(provider.stats()["revocation_requests"]["success"])


@pytest.fixture
def connected(flow_api: InProcessApi, provider: OidcProvider) -> dict[str, Any]:
    connection = create_connection(flow_api, provider)
    connect(flow_api, provider, connection)
    return connection


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as running:
        yield running


def assert_grant_ended(
    api: InProcessApi, resources: Resources, before: dict[str, Any], after: dict[str, Any], version: int
) -> None:
    assert after["status"] == "pending"
    assert after["id"] == before["id"] and after["name"] == before["name"]
    assert after["granted_scopes"] is None and after["expires_at"] is None and after["connected_at"] is None
    item = stored_item(resources, api.tenant, before["id"])
    for attribute in ("tokens_ciphertext", "due_shard", "due_at", "lease_owner", "next_attempt_at"):
        assert attribute not in item, attribute
    assert int(item["token_version"]["N"]) == version + 1
    assert item["has_refresh_token"] == {"BOOL": False}
    assert get_token(api.tenant, before["id"])["error"]["code"] == "not_connected"


# ------------------------------------------------------------------ what ends the grant


def _same_origin_change(provider: OidcProvider, field: str) -> dict[str, Any]:
    """A new value of `field` that sends nothing to another origin."""
    changes: dict[str, dict[str, Any]] = {
        "client_id": {"client_id": POST_CLIENT_ID},
        "issuer": {"issuer": None},
        "authorization_url": {"authorization_url": f"{provider.authorization_endpoint}?prompt=consent"},
        "token_url": {"token_url": f"{provider.issuer}/elsewhere/token"},
        "revocation_url": {"revocation_url": None},
        "refresh_url": {"refresh_url": provider.token_endpoint},
        "quirks": {"quirks": {"refresh_params": {"audience": "api"}}},
        "token_auth_method": {"token_auth_method": "client_secret_post"},
        "grant_type": {"grant_type": "client_credentials"},
    }
    return changes[field]


@pytest.mark.parametrize("field", grants.GRANT_FIELDS)
def test_changing_a_grant_setting_ends_the_grant(
    flow_api: InProcessApi,
    provider: OidcProvider,
    connected: dict[str, Any],
    service_env: Resources,
    published_events: EventCapture,
    field: str,
) -> None:
    old = stored_tokens(flow_api.tenant, connected["id"])
    assert active(provider, old.refresh_token)
    version = int(stored_item(service_env, flow_api.tenant, connected["id"])["token_version"]["N"])
    revoked_before = revocations(provider)
    response = patch(flow_api, connected["id"], _same_origin_change(provider, field))
    assert response.status == 200, response.text
    assert_grant_ended(flow_api, service_env, connected, response.json(), version)
    # Revoked at the old revocation endpoint, with the old client (the refresh token is dead there).
    assert revocations(provider) == revoked_before + 1
    assert not active(provider, old.refresh_token)
    (event,) = published_events.of("connection.grant_ended", connected["id"])
    assert event["detail"]["status"] == "pending" and event["detail"]["reason"] == "settings_changed"
    assert event["detail"]["changed_fields"] == [field] and event["detail"]["revoked"] is True
    assert old.refresh_token and old.refresh_token not in repr(event) and old.access_token not in repr(event)


def test_setting_the_stored_values_again_changes_nothing(
    flow_api: InProcessApi, provider: OidcProvider, connected: dict[str, Any], published_events: EventCapture
) -> None:
    old = stored_tokens(flow_api.tenant, connected["id"])
    same = {field: connected[field] for field in grants.GRANT_FIELDS}
    response = patch(flow_api, connected["id"], same | {"description": "same provider"})
    assert response.status == 200, response.text
    assert response.json()["status"] == "connected"
    assert stored_tokens(flow_api.tenant, connected["id"]) == old
    assert published_events.of("connection.grant_ended", connected["id"]) == []


def test_other_settings_keep_the_grant(
    flow_api: InProcessApi, provider: OidcProvider, connected: dict[str, Any], published_events: EventCapture
) -> None:
    old = stored_tokens(flow_api.tenant, connected["id"])
    change = {"name": f"renamed {connected['id']}", "scopes": ["api.read"], "use_pkce": False, "allowed_urls": []}
    response = patch(flow_api, connected["id"], change | {"client_secret": BASIC_CLIENT_SECRET})
    assert response.status == 200, response.text
    assert response.json()["status"] == "connected"
    assert stored_tokens(flow_api.tenant, connected["id"]) == old
    assert published_events.of("connection.grant_ended", connected["id"]) == []


def test_a_pending_connection_takes_grant_changes_without_revocation(
    flow_api: InProcessApi, provider: OidcProvider, published_events: EventCapture
) -> None:
    connection = create_connection(flow_api, provider)
    before = provider.stats()["revocation_requests"]["total"]
    response = patch(flow_api, connection["id"], {"client_id": POST_CLIENT_ID})
    assert response.status == 200, response.text
    assert response.json()["status"] == "pending" and response.json()["client_id"] == POST_CLIENT_ID
    assert provider.stats()["revocation_requests"]["total"] == before
    assert published_events.of("connection.grant_ended", connection["id"]) == []


def test_connect_works_again_after_the_grant_ended(
    flow_api: InProcessApi, provider: OidcProvider, connected: dict[str, Any], service_env: Resources
) -> None:
    change = {
        "client_id": POST_CLIENT_ID,
        "token_auth_method": "client_secret_post",
        "client_secret": POST_CLIENT_SECRET,
    }
    response = patch(flow_api, connected["id"], change)
    assert response.status == 200 and response.json()["status"] == "pending", response.text
    connect(flow_api, provider, connected)
    view = flow_api.call("get_connection", connection_id=connected["id"]).json()
    assert view["status"] == "connected" and view["id"] == connected["id"]
    token = get_token(flow_api.tenant, connected["id"])["access_token"]
    assert provider.introspect(token, POST_CLIENT_ID, POST_CLIENT_SECRET, auth_method="client_secret_post")[
        "client_id"
    ] == (POST_CLIENT_ID)


# ------------------------------------------------------------------ where the stored secret may go


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("https://LOGIN.crm.example.com:443/oauth/other", True),
        ("https://login.crm.example.com/revoke?x=1", True),
        ("http://login.crm.example.com/oauth/token", False),
        ("https://login.crm.example.com:8443/oauth/token", False),
        ("https://crm.example.com/oauth/token", False),
        ("https://login.crm.example.com.evil.example.com/oauth/token", False),
    ],
)
def test_an_origin_is_scheme_host_and_port(url: str, same: bool) -> None:
    assert (grants.origin(url) == grants.origin("https://login.crm.example.com/oauth/token")) is same


@pytest.mark.parametrize("field", ["token_url", "revocation_url", "issuer"])
@pytest.mark.parametrize("state", ["pending", "connected"])
def test_moving_a_secret_endpoint_to_another_origin_needs_its_secret(
    flow_api: InProcessApi,
    provider: OidcProvider,
    capture: CaptureServer,
    service_env: Resources,
    field: str,
    state: str,
) -> None:
    connection = create_connection(flow_api, provider)
    if state == "connected":
        connect(flow_api, provider, connection)
    before = stored_item(service_env, flow_api.tenant, connection["id"])
    refused = patch(flow_api, connection["id"], {field: capture.endpoint(field)})
    assert refused.status == 422, refused.text
    assert refused.json()["error"]["code"] == "client_secret_required"
    assert stored_item(service_env, flow_api.tenant, connection["id"]) == before  # nothing changed
    assert capture.beyond_discovery() == []
    # With a secret entered for the new endpoint the edit goes through (and ends any grant).
    accepted = patch(flow_api, connection["id"], {field: capture.endpoint(field), "client_secret": NEW_SECRET})
    assert accepted.status == 200, accepted.text
    assert accepted.json()["token_url" if field == "issuer" else field] == capture.endpoint(
        "token_url" if field == "issuer" else field
    )
    assert accepted.json()["status"] == "pending"
    assert capture.beyond_discovery() == []


def test_a_public_client_may_move_without_a_secret(
    flow_api: InProcessApi, provider: OidcProvider, capture: CaptureServer
) -> None:
    connection = create_connection(flow_api, provider)
    response = patch(
        flow_api,
        connection["id"],
        {"token_url": capture.endpoint("token_url"), "token_auth_method": "none", "client_secret": None},
    )
    assert response.status == 200, response.text
    assert response.json()["has_client_secret"] is False


def test_moving_within_the_secrets_origins_needs_no_secret(flow_api: InProcessApi, provider: OidcProvider) -> None:
    connection = create_connection(flow_api, provider)
    response = patch(flow_api, connection["id"], {"revocation_url": f"{provider.issuer}/other/revoke"})
    assert response.status == 200, response.text


def test_issuer_change_clears_endpoints_the_new_metadata_does_not_name(
    flow_api: InProcessApi, provider: OidcProvider, capture: CaptureServer
) -> None:
    connection = create_connection(flow_api, provider)
    capture.discovered = {"token_url"}
    response = patch(flow_api, connection["id"], {"issuer": capture.url, "client_secret": NEW_SECRET})
    assert response.status == 200, response.text
    view = response.json()
    assert view["token_url"] == capture.endpoint("token_url")
    assert view["authorization_url"] is None and view["revocation_url"] is None  # not the old provider's


# ------------------------------------------------------------------ what began before the edit


def test_a_flow_started_before_an_edit_is_refused_at_the_callback(
    flow_api: InProcessApi, provider: OidcProvider, capture: CaptureServer, service_env: Resources
) -> None:
    connection = create_connection(flow_api, provider)
    redirect = open_redirect_url(flow_api, start(flow_api, connection["id"]))
    result = walk_authorization(redirect.location)
    assert result.code
    change = {"token_url": capture.endpoint("token_url"), "client_secret": NEW_SECRET}
    assert patch(flow_api, connection["id"], change).status == 200
    assert error_of(callback(flow_api, result, redirect.cookie))["error"] == "connection_changed"
    assert capture.received() == []  # the code went nowhere
    assert stored_item(service_env, flow_api.tenant, connection["id"])["status"] == {"S": "pending"}


def test_a_flow_started_before_an_edit_is_refused_at_the_redirect(
    flow_api: InProcessApi, provider: OidcProvider
) -> None:
    from urllib.parse import parse_qs, urlsplit

    connection = create_connection(flow_api, provider)
    redirect_url = start(flow_api, connection["id"])
    assert patch(flow_api, connection["id"], {"client_id": POST_CLIENT_ID}).status == 200
    handle = parse_qs(urlsplit(redirect_url).query)["flow"][0]
    response = flow_api.call("authorize_redirect", query={"flow": handle})
    assert response.status == 400
    assert "settings changed" in response.text and response.cookies == []


def test_tokens_of_the_old_settings_are_not_stored(
    flow_api: InProcessApi, provider: OidcProvider, connected: dict[str, Any], service_env: Resources
) -> None:
    settings = get_settings()
    record = CONNECTIONS.load(flow_api.tenant, connected["id"], consistent=True)
    old_grant, old_tokens = grants.fingerprint(record), stored_tokens(flow_api.tenant, connected["id"])
    assert patch(flow_api, connected["id"], {"client_id": POST_CLIENT_ID}).status == 200
    after = stored_item(service_env, flow_api.tenant, connected["id"])
    with pytest.raises(ConflictError) as refused:
        tokens.store_connected(settings, flow_api.tenant, connected["id"], old_tokens, grant=old_grant)
    assert refused.value.code == "connection_changed"
    assert stored_item(service_env, flow_api.tenant, connected["id"]) == after


@pytest.fixture
def proxy(provider: OidcProvider) -> Iterator[HoldingTokenProxy]:
    with HoldingTokenProxy(provider.token_endpoint) as running:
        yield running


def test_a_refresh_racing_an_edit_cannot_bring_the_tokens_back(
    flow_api: InProcessApi, provider: OidcProvider, proxy: HoldingTokenProxy, service_env: Resources
) -> None:
    """The refresh read the old settings and is at the provider when the edit lands: it sends nothing to
    the new settings' hosts, and neither its answer nor its failure is written onto the edited connection."""
    connection = create_connection(flow_api, provider, token_url=proxy.url)
    connect(flow_api, provider, connection)
    old = stored_tokens(flow_api.tenant, connection["id"])
    proxy.hold_refreshes = True
    with ThreadPoolExecutor(1) as background:
        refreshing = background.submit(flow_api.call, "refresh_connection", connection_id=connection["id"])
        held = proxy.wait_for_held(timeout=20)
        assert held.form["refresh_token"] == old.refresh_token
        edited = patch(flow_api, connection["id"], {"authorization_url": f"{provider.authorization_endpoint}?x=1"})
        assert edited.status == 200 and edited.json()["status"] == "pending", edited.text
        proxy.release(held)
        answer = refreshing.result(timeout=30)
    # The edit revoked the grant first, so the provider refused the held refresh token.
    assert answer.status == 409 and answer.json()["error"]["code"] == "reauthorization_required", answer.text
    item = stored_item(service_env, flow_api.tenant, connection["id"])
    assert item["status"] == {"S": "pending"}
    assert "tokens_ciphertext" not in item and "lease_owner" not in item and "due_at" not in item
    assert item["status_reason"] == {"S": "settings_changed"}


def test_a_successful_refresh_racing_an_edit_is_discarded(
    flow_api: InProcessApi, provider: OidcProvider, proxy: HoldingTokenProxy, service_env: Resources
) -> None:
    """Without a revocation endpoint the held refresh succeeds at the provider; its tokens still stay out."""
    connection = create_connection(flow_api, provider, token_url=proxy.url)
    assert patch(flow_api, connection["id"], {"revocation_url": None}).status == 200
    connect(flow_api, provider, connection)
    proxy.hold_refreshes = True
    with ThreadPoolExecutor(1) as background:
        refreshing = background.submit(flow_api.call, "refresh_connection", connection_id=connection["id"])
        held = proxy.wait_for_held(timeout=20)
        edited = patch(flow_api, connection["id"], {"client_id": POST_CLIENT_ID})
        assert edited.status == 200 and edited.json()["status"] == "pending", edited.text
        before = token_outcomes(provider)
        proxy.release(held)
        answer = refreshing.result(timeout=30)
    assert token_outcomes(provider).get("success", 0) == before.get("success", 0) + 1
    assert answer.status == 409 and answer.json()["error"]["code"] == "not_connected", answer.text
    item = stored_item(service_env, flow_api.tenant, connection["id"])
    assert item["status"] == {"S": "pending"} and "tokens_ciphertext" not in item


# ------------------------------------------------------------------ a new secret for a refused client


def test_a_new_client_secret_recovers_a_connection_refused_for_its_client(
    flow_api: InProcessApi,
    provider: OidcProvider,
    connected: dict[str, Any],
    service_env: Resources,
    published_events: EventCapture,
) -> None:
    connection_id = connected["id"]
    # The provider stops accepting the stored secret (as after a rotation there): the refresh is refused.
    assert patch(flow_api, connection_id, {"client_secret": "no-longer-valid"}).json()["status"] == "connected"
    refused = flow_api.call("refresh_connection", connection_id=connection_id)
    assert refused.status == 409 and refused.json()["error"]["code"] == "reauthorization_required"
    assert stored_item(service_env, flow_api.tenant, connection_id)["status_reason"] == {"S": "invalid_client"}
    old = stored_tokens(flow_api.tenant, connection_id)

    # Another wrong secret: one attempt, refused again; the connection still needs the tenant.
    before = token_outcomes(provider)
    wrong = patch(flow_api, connection_id, {"client_secret": "still-not-it"})
    assert wrong.status == 200 and wrong.json()["status"] == "reauthorization_required", wrong.text
    after = token_outcomes(provider)
    assert after.get("invalid_client", 0) == before.get("invalid_client", 0) + 1
    assert sum(after.values()) == sum(before.values()) + 1
    assert stored_tokens(flow_api.tenant, connection_id) == old  # never lost

    # The right secret: one refresh with it, and the connection is back without the user.
    fixed = patch(flow_api, connection_id, {"client_secret": BASIC_CLIENT_SECRET})
    assert fixed.status == 200 and fixed.json()["status"] == "connected", fixed.text
    assert token_outcomes(provider).get("success", 0) == after.get("success", 0) + 1
    token = get_token(flow_api.tenant, connection_id)
    assert token["access_token"] != old.access_token and active(provider, token["access_token"])
    item = stored_item(service_env, flow_api.tenant, connection_id)
    assert "status_reason" not in item and "due_at" in item
    recovered = published_events.of("connection.connected", connection_id)
    assert [e["detail"]["reason"] for e in recovered] == ["authorized", "client_secret_changed"]


def test_a_new_secret_does_not_retry_a_revoked_grant(
    flow_api: InProcessApi, provider: OidcProvider, connected: dict[str, Any]
) -> None:
    provider.revoke(
        stored_tokens(flow_api.tenant, connected["id"]).refresh_token or "", BASIC_CLIENT_ID, BASIC_CLIENT_SECRET
    )
    refused = flow_api.call("refresh_connection", connection_id=connected["id"])
    assert refused.json()["error"]["code"] == "reauthorization_required", refused.text
    before = token_outcomes(provider)
    response = patch(flow_api, connected["id"], {"client_secret": BASIC_CLIENT_SECRET})
    assert response.status == 200 and response.json()["status"] == "reauthorization_required"
    assert token_outcomes(provider) == before  # invalid_grant is not the client's fault: no attempt


def test_concurrent_edits_do_not_lose_a_grant_change(
    flow_api: InProcessApi, provider: OidcProvider, connected: dict[str, Any]
) -> None:
    """A description edit racing the grant-ending one is merged on top: the grant stays ended."""
    barrier = threading.Barrier(2, timeout=10)

    def edit(body: dict[str, Any]) -> int:
        barrier.wait()
        return patch(flow_api, connected["id"], body).status

    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(edit, [{"client_id": POST_CLIENT_ID}, {"description": "racing"}]))
    assert statuses == [200, 200]
    view = flow_api.call("get_connection", connection_id=connected["id"]).json()
    assert view["client_id"] == POST_CLIENT_ID and view["description"] == "racing"
    assert view["status"] == "pending"
