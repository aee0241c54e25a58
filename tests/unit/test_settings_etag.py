"""The connection's ETag is the version of its settings: token writes, leases and status changes keep it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from oauth_connections.core.clock import utcnow
from oauth_connections.storage.connections import CONNECTIONS, ConnectionRecord, acquire_lease, release_lease
from tests.conftest import InProcessApi
from tests.support.provider import OidcProvider
from tests.unit.flow_helpers import connect, create_connection
from tests.unit.test_get_token import age_tokens, get_token


def etag_of(api: InProcessApi, connection_id: str) -> str:
    response = api.call("get_connection", connection_id=connection_id)
    assert response.status == 200, response.text
    assert response.headers["ETag"] == f'"{response.json()["version"]}"'
    return str(response.headers["ETag"])


def patch(api: InProcessApi, connection_id: str, etag: str, **body: Any) -> Any:
    return api.call("update_connection", connection_id=connection_id, body=body, headers={"if-match": etag})


def test_tokens_leases_and_status_keep_the_etag(flow_api: InProcessApi, provider: OidcProvider) -> None:
    connection = create_connection(flow_api, provider)
    read = etag_of(flow_api, connection["id"])
    connect(flow_api, provider, connection)  # tokens stored, status connected
    age_tokens(flow_api.tenant, connection["id"])
    assert "access_token" in get_token(flow_api.tenant, connection["id"], force_refresh=True)  # a refresh
    record = CONNECTIONS.load(flow_api.tenant, connection["id"], consistent=True)
    assert acquire_lease(record, "someone", utcnow() + timedelta(seconds=30))  # a lease
    assert release_lease(record, "someone", [ConnectionRecord.status_reason.set("x")])
    stored = CONNECTIONS.load(flow_api.tenant, connection["id"], consistent=True)
    assert int(stored.version) > 4  # the item's write version moved on every write ...
    assert etag_of(flow_api, connection["id"]) == read  # ... the settings' did not

    updated = patch(flow_api, connection["id"], read, description="edited after a refresh")
    assert updated.status == 200, updated.text
    assert updated.headers["ETag"] != read
    assert updated.json()["status"] == "connected"  # a description keeps the grant


def test_a_settings_edit_moves_the_etag_and_a_stale_one_is_refused(
    flow_api: InProcessApi, provider: OidcProvider
) -> None:
    connection = create_connection(flow_api, provider)
    read = etag_of(flow_api, connection["id"])
    first = patch(flow_api, connection["id"], read, description="first")
    assert first.status == 200, first.text
    assert first.headers["ETag"] == f'"{int(read.strip(chr(34))) + 1}"'
    stale = patch(flow_api, connection["id"], read, description="second")
    assert stale.status == 412
    assert stale.json()["error"]["code"] == "stale_update"
    assert flow_api.call("get_connection", connection_id=connection["id"]).json()["description"] == "first"
