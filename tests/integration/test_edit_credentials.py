"""Editing a connected connection through the local stack cannot send its credentials to another host.

A connection is connected at the real provider through the local API and the provider's own pages; one
endpoint is then pointed at a capture server on loopback, and everything that could send the client
secret or a token there is triggered: GetTokenFunction through the local Lambda endpoint, the API's
forced refresh, and the delete. The capture server must see neither; it is reached only where the edit
itself has to go (the new issuer's discovery document).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack import Stack
from tests.support.capture_server import DISCOVERY_PATHS, CaptureServer
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import age_tokens, connect, create_connection, get_token, new_tenant, refreshes

RETURN_URL = "http://127.0.0.1:5173/done"
ENDPOINTS = ["token_url", "revocation_url", "issuer", "authorization_url"]
OTHER_SECRET = "a-secret-entered-for-the-other-host"


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as running:
        yield running


def connected_connection(api: ApiClient, provider: OidcProvider, **extra: Any) -> tuple[ApiClient, str, str]:
    tenant = new_tenant("edit")
    client = api.as_tenant(tenant)
    connection = create_connection(client, provider, **extra)
    connect(client, connection["id"], RETURN_URL)
    return client, tenant, connection["id"]


def revocations(provider: OidcProvider) -> int:
    return int(provider.stats()["revocation_requests"]["success"])


def events_of(stack: Stack, detail_type: str, connection_id: str) -> list[dict[str, Any]]:
    return [
        event
        for event in stack.published_events()
        if event["detail-type"] == detail_type and event["detail"]["connection_id"] == connection_id
    ]


def refresh_everywhere(stack: Stack, client: ApiClient, tenant: str, connection_id: str) -> tuple[Any, Any]:
    """A forced refresh through GetTokenFunction and one through the API: their answers."""
    age_tokens(stack, tenant, connection_id)
    through_lambda = get_token(stack, tenant, connection_id, force_refresh=True)
    through_api = client.post(f"/connections/{connection_id}/refresh")
    return through_lambda, through_api


@pytest.mark.parametrize("field", ENDPOINTS)
def test_an_edited_endpoint_receives_neither_the_secret_nor_a_token(
    api: ApiClient, stack: Stack, provider: OidcProvider, capture: CaptureServer, field: str
) -> None:
    client, tenant, connection_id = connected_connection(api, provider)
    path = f"/connections/{connection_id}"
    tokens = [get_token(stack, tenant, connection_id)["access_token"]]
    target = capture.endpoint(field)

    if field != "authorization_url":
        # The stored secret would go there: refused, and nothing changes.
        before = client.get(path).json()
        refused = client.patch(path, json={field: target})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "client_secret_required"
        assert client.get(path).json() == before
        # The grant still works, with the real provider only.
        provider_refreshes = refreshes(provider)
        through_lambda, through_api = refresh_everywhere(stack, client, tenant, connection_id)
        assert through_api.status_code == 200 and through_api.json()["status"] == "connected", through_api.text
        tokens.append(through_lambda["access_token"])
        assert refreshes(provider) == provider_refreshes + 2
        edit: dict[str, Any] = {field: target, "client_secret": OTHER_SECRET}
    else:
        edit = {field: target}

    # An edit that does go through ends the grant: revoked at the real provider, dropped here.
    revoked = revocations(provider)
    accepted = client.patch(path, json=edit)
    assert accepted.status_code == 200, accepted.text
    view = accepted.json()
    assert view["status"] == "pending" and view["id"] == connection_id and view["expires_at"] is None
    assert revocations(provider) == revoked + 1
    (ended,) = events_of(stack, "connection.grant_ended", connection_id)
    assert ended["detail"]["revoked"] is True
    discovered = ["issuer", "authorization_url", "token_url", "revocation_url"]  # a new issuer moves them all
    assert ended["detail"]["changed_fields"] == (discovered if field == "issuer" else [field])

    # Nothing is left to send: no refresh anywhere, and the delete revokes nothing.
    through_lambda, through_api = refresh_everywhere(stack, client, tenant, connection_id)
    assert through_lambda["error"]["code"] == "not_connected", through_lambda
    assert through_api.status_code == 409 and through_api.json()["error"]["code"] == "not_connected"
    revoked = revocations(provider)
    assert client.delete(path).status_code == 204
    assert revocations(provider) == revoked

    received = capture.received()
    if field == "issuer":  # the new issuer's metadata was read, by bare GETs
        assert received and all(r.method == "GET" and r.path in DISCOVERY_PATHS for r in received), received
    else:
        assert received == []
    for request in received:
        assert "authorization" not in {name.lower() for name in request.headers}
        assert BASIC_CLIENT_SECRET not in request.raw and OTHER_SECRET not in request.raw
        assert not any(token in request.raw for token in tokens)


def test_after_an_edit_the_connection_connects_again(api: ApiClient, stack: Stack, provider: OidcProvider) -> None:
    """The grant ends, the connection stays: same id, name and feeds, and Connect works at the provider."""
    client, tenant, connection_id = connected_connection(api, provider, allowed_urls=[f"{provider.issuer}/"])
    path = f"/connections/{connection_id}"
    feed = client.post(
        "/feeds",
        json={"name": "catalog", "url": f"{provider.issuer}/demo/catalog.xml", "connection_id": connection_id},
    )
    assert feed.status_code == 201, feed.text
    name = client.get(path).json()["name"]
    old = get_token(stack, tenant, connection_id)["access_token"]

    edited = client.patch(
        path, json={"scopes": ["api.read"], "authorization_url": f"{provider.authorization_endpoint}?prompt=consent"}
    )
    assert edited.status_code == 200 and edited.json()["status"] == "pending", edited.text
    assert provider.introspect(old, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is False

    connect(client, connection_id, RETURN_URL)
    view = client.get(path).json()
    assert view["status"] == "connected" and view["name"] == name and view["granted_scopes"] == ["api.read"]
    assert client.get(f"/feeds/{feed.json()['id']}").json()["connection_id"] == connection_id
    fresh = get_token(stack, tenant, connection_id)["access_token"]
    assert provider.introspect(fresh, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True


def test_a_new_client_secret_recovers_a_refused_connection(
    api: ApiClient, stack: Stack, provider: OidcProvider
) -> None:
    client, tenant, connection_id = connected_connection(api, provider)
    path = f"/connections/{connection_id}"
    assert client.patch(path, json={"client_secret": "not-accepted-any-more"}).json()["status"] == "connected"
    refused = client.post(f"{path}/refresh")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "reauthorization_required"
    assert get_token(stack, tenant, connection_id)["error"]["code"] == "reauthorization_required"

    wrong = client.patch(path, json={"client_secret": "still-not-accepted"})
    assert wrong.status_code == 200 and wrong.json()["status"] == "reauthorization_required", wrong.text
    fixed = client.patch(path, json={"client_secret": BASIC_CLIENT_SECRET})
    assert fixed.status_code == 200 and fixed.json()["status"] == "connected", fixed.text
    token = get_token(stack, tenant, connection_id)["access_token"]
    assert provider.introspect(token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True
    reasons = [event["detail"]["reason"] for event in events_of(stack, "connection.connected", connection_id)]
    assert reasons == ["authorized", "client_secret_changed"]
