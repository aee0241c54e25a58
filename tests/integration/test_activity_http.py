"""The activity log through the local API: each action leaves exactly one entry naming the token's user,
another tenant sees none of them, and no entry holds the client secret."""

from __future__ import annotations

from typing import Any

from tests.integration.test_connections_http import CLIENT_SECRET, create
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import new_tenant

RETURN_URL = "http://127.0.0.1:8000/connections"  # an allowed frontend origin of the local stack


def activity_of(client: ApiClient, path: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(path, params=params | {"limit": 100})
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_each_action_leaves_one_entry_by_its_user_and_only_its_tenant_sees_it(api: ApiClient) -> None:
    tenant = new_tenant("activity")
    alice, bob, carol = (api.as_tenant(tenant, user) for user in ("alice", "bob", "carol"))
    created = create(alice)
    connection = f"/connections/{created['id']}"
    edited = bob.patch(connection, json={"description": "moved to the new CRM", "client_secret": CLIENT_SECRET + "2"})
    assert edited.status_code == 200, edited.text
    started = carol.post(f"{connection}/authorize", json={"return_url": RETURN_URL})
    assert started.status_code == 200, started.text
    assert alice.delete(connection).status_code == 204

    log = activity_of(bob, f"{connection}/activity")
    assert [(e["type"], e["actor"], e["trigger"]) for e in log] == [
        ("connection.deleted", "alice", "api"),
        ("authorization.started", "carol", "api"),
        ("connection.updated", "bob", "api"),
        ("connection.created", "alice", "api"),
    ]
    assert log[2]["details"]["changes"] == {
        "client_secret": "changed",
        "description": {"old": "", "new": "moved to the new CRM"},
    }
    assert [e["id"] for e in activity_of(bob, "/activity")] == [e["id"] for e in log]
    assert [e["type"] for e in activity_of(bob, "/activity", user="bob")] == ["connection.updated"]
    assert CLIENT_SECRET not in repr(log)

    stranger = api.as_tenant(new_tenant("activity-other"), "alice")
    assert stranger.get(f"{connection}/activity").json()["error"]["code"] == "not_found"
    assert activity_of(stranger, "/activity") == []


def test_activity_cannot_be_changed_or_deleted_through_the_api(api: ApiClient) -> None:
    client = api.as_tenant(new_tenant("activity"), "alice")
    created = create(client)
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        response = client.request(method, f"/connections/{created['id']}/activity", json={})
        assert response.status_code == 404, (method, response.status_code, response.text)
    assert len(activity_of(client, f"/connections/{created['id']}/activity")) == 1
