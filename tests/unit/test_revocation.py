"""Deleting a connected connection revokes its grant at the provider (RFC 7009), then deletes anyway."""

from __future__ import annotations

import boto3

from oauth_connections.connections import tokens
from oauth_connections.core.config import get_settings
from oauth_connections.oauth import token_endpoint
from oauth_connections.storage.connections import CONNECTIONS
from tests.conftest import InProcessApi, Resources
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.unit.flow_helpers import connect, create_connection


def stored(api: InProcessApi, connection_id: str) -> token_endpoint.TokenSet:
    token_set = tokens.decrypt_tokens(get_settings(), CONNECTIONS.load(api.tenant, connection_id, consistent=True))
    assert token_set is not None
    return token_set


def active(provider: OidcProvider, token: str | None) -> bool:
    return bool(provider.introspect(token or "", BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"])


def gone(resources: Resources, tenant: str, connection_id: str) -> bool:
    item = boto3.client("dynamodb").get_item(
        TableName=resources.table_name,
        Key={"pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": f"CONNECTION#{connection_id}"}},
    )
    return "Item" not in item


def test_delete_revokes_the_grant(flow_api: InProcessApi, provider: OidcProvider, service_env: Resources) -> None:
    connection = create_connection(flow_api, provider)
    connect(flow_api, provider, connection)
    token_set = stored(flow_api, connection["id"])
    assert active(provider, token_set.refresh_token)
    assert active(provider, token_set.access_token)
    before = provider.stats()["revocation_requests"]["success"]
    assert flow_api.call("delete_connection", connection_id=connection["id"]).status == 204
    assert provider.stats()["revocation_requests"]["success"] == before + 1
    assert not active(provider, token_set.refresh_token)
    assert gone(service_env, flow_api.tenant, connection["id"])


def test_delete_goes_on_when_revocation_fails(
    flow_api: InProcessApi, provider: OidcProvider, service_env: Resources
) -> None:
    from tests.conftest import free_port

    unreachable = f"http://127.0.0.1:{free_port()}/revoke"
    connection = create_connection(flow_api, provider, revocation_url=unreachable)
    assert connection["revocation_url"] == unreachable
    connect(flow_api, provider, connection)
    assert flow_api.call("delete_connection", connection_id=connection["id"]).status == 204
    assert gone(service_env, flow_api.tenant, connection["id"])


def test_pending_connection_is_deleted_without_a_provider_call(flow_api: InProcessApi, provider: OidcProvider) -> None:
    connection = create_connection(flow_api, provider)
    before = provider.stats()["revocation_requests"]["total"]
    assert flow_api.call("delete_connection", connection_id=connection["id"]).status == 204
    assert provider.stats()["revocation_requests"]["total"] == before
