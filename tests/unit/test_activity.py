"""The activity log, in-process against the embedded AWS: each action leaves one entry naming its user."""

from __future__ import annotations

from typing import Any

from tests.conftest import InProcessApi, Resources
from tests.unit.test_connections_api import connection_body, create

SECRET = "activity-client-secret-value"


def entries(subject_id: str | None = None, tenant: str = "acme", **filters: Any) -> list[dict[str, Any]]:
    from oauth_connections.connections.activity import list_activity
    from oauth_connections.core.config import get_settings

    page = list_activity(get_settings(), tenant, subject_id, 100, None, **filters)
    return [item.model_dump(mode="json") for item in page.items]


def test_create_update_delete_each_leave_one_entry_by_their_user(api: InProcessApi) -> None:
    created = create(api, name="Activity CRM", client_secret=SECRET)
    claims = {"sub": "bob", "tenant_id": "acme"}
    updated = api.call(
        "update_connection",
        connection_id=created["id"],
        body={"description": "new text", "client_secret": SECRET + "-rotated"},
        claims=claims,
    )
    assert updated.status == 200, updated.text
    assert (
        api.call("delete_connection", connection_id=created["id"], claims={"sub": "carol", "tenant_id": "acme"}).status
        == 204
    )

    log = entries(created["id"])
    assert [(e["type"], e["actor"], e["trigger"]) for e in log] == [
        ("connection.deleted", "carol", "api"),
        ("connection.updated", "bob", "api"),
        ("connection.created", "alice", "api"),
    ]
    assert log[1]["details"]["changes"] == {
        "client_secret": "changed",
        "description": {"old": created["description"], "new": "new text"},
    }
    assert log[0]["details"] == {"name": "Activity CRM", "revoked": False}
    tenant_log = entries(None)
    assert [e["id"] for e in tenant_log if e["subject_id"] == created["id"]] == [e["id"] for e in log]
    assert SECRET not in repr(tenant_log)


def test_another_tenant_sees_none_of_the_entries(api: InProcessApi) -> None:
    created = create(api, name="Isolated activity")
    assert entries(created["id"])
    assert entries(created["id"], tenant="globex") == []
    assert all(e["subject_id"] != created["id"] for e in entries(None, tenant="globex"))


def test_a_token_without_the_user_claim_acts_as_no_one(api: InProcessApi) -> None:
    response = api.call("create_connection", body=connection_body(name="Machine made"), claims={"tenant_id": "acme"})
    assert response.status == 201, response.text
    assert [e["actor"] for e in entries(response.json()["id"])] == [None]


def test_the_user_claim_is_configurable(api: InProcessApi, service_env: Resources, monkeypatch: Any) -> None:
    from oauth_connections.core.config import get_settings

    monkeypatch.setenv("USER_CLAIM", "email")
    get_settings.cache_clear()
    response = api.call(
        "create_connection",
        body=connection_body(name="By email"),
        claims={"sub": "id-1", "email": "dana@example.com", "tenant_id": "acme"},
    )
    assert response.status == 201, response.text
    assert [e["actor"] for e in entries(response.json()["id"])] == ["dana@example.com"]


def test_filters_by_type_and_user(api: InProcessApi) -> None:
    first = create(api, name="Filter one")
    api.call(
        "update_connection",
        connection_id=first["id"],
        body={"description": "x"},
        claims={"sub": "erin", "tenant_id": "acme"},
    )
    by_erin = entries(None, actor="erin")
    assert [(e["type"], e["subject_id"]) for e in by_erin] == [("connection.updated", first["id"])]
    assert all(e["type"] == "connection.created" for e in entries(None, kind="connection.created"))
