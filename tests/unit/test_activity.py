"""The activity log, in-process against the embedded AWS: each action leaves one entry naming its user."""

from __future__ import annotations

from typing import Any

from tests.conftest import EventCapture, InProcessApi, Resources
from tests.support.provider import OidcProvider
from tests.unit.test_connections_api import connection_body, create
from tests.unit.test_feeds import feed_server, fetcher_env  # noqa: F401 (fixtures)

SECRET = "activity-client-secret-value"


def entries(subject_id: str | None = None, tenant: str = "acme", **query: str) -> list[dict[str, Any]]:
    """Every entry of a log through the API, following the cursor."""
    api = InProcessApi(tenant)
    found: list[dict[str, Any]] = []
    params = dict(query)
    while True:
        if subject_id:
            response = api.call("list_connection_activity", connection_id=subject_id, query=params)
        else:
            response = api.call("list_activity", query=params)
        assert response.status == 200, response.text
        page = response.json()
        found += page["items"]
        if not page.get("next_cursor"):
            return found
        params["cursor"] = page["next_cursor"]


def feed_entries(api: InProcessApi, feed_id: str, **query: str) -> list[dict[str, Any]]:
    """Every entry of a feed's log through its route, following the cursor a page of two at a time."""
    found: list[dict[str, Any]] = []
    params = {"limit": "2"} | query
    while True:
        response = api.call("list_feed_activity", feed_id=feed_id, query=params)
        assert response.status == 200, response.text
        found += response.json()["items"]
        if not response.json()["next_cursor"]:
            return found
        params["cursor"] = response.json()["next_cursor"]


def test_create_update_delete_each_leave_one_entry_by_their_user(
    api: InProcessApi, published_events: EventCapture
) -> None:
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
    (updated_event,) = published_events.of("connection.updated", created["id"])
    assert updated_event["detail"]["changes"] == log[1]["details"]["changes"]
    assert len(published_events.of("connection.created", created["id"])) == 1
    (deleted_event,) = published_events.of("connection.deleted", created["id"])
    assert deleted_event["detail"]["revoked"] is False
    assert SECRET not in repr(published_events.seen)
    tenant_log = entries(None)
    assert [e["id"] for e in tenant_log if e["subject_id"] == created["id"]] == [e["id"] for e in log]
    assert SECRET not in repr(tenant_log)


def test_another_tenant_sees_none_of_the_entries(api: InProcessApi) -> None:
    created = create(api, name="Isolated activity")
    assert entries(created["id"])
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
    by_erin = entries(None, user="erin")
    assert [(e["type"], e["subject_id"]) for e in by_erin] == [("connection.updated", first["id"])]
    assert all(e["type"] == "connection.created" for e in entries(None, type="connection.created"))


def test_pages_follow_each_other_newest_first_without_gaps(api: InProcessApi) -> None:
    created = create(api, name="Paged activity")
    for text in ("one", "two", "three", "four"):
        assert api.call("update_connection", connection_id=created["id"], body={"description": text}).status == 200
    first = api.call("list_connection_activity", connection_id=created["id"], query={"limit": "2"}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    everything = entries(created["id"], limit="2")
    assert [e["details"].get("changes", {}).get("description", {}).get("new") for e in everything] == [
        "four",
        "three",
        "two",
        "one",
        None,
    ]
    assert everything[:2] == first["items"]


def test_time_range_selects_entries(api: InProcessApi) -> None:
    created = create(api, name="Timed activity")
    moment = entries(created["id"])[0]["occurred_at"]
    assert api.call("update_connection", connection_id=created["id"], body={"description": "later"}).status == 200
    later = entries(created["id"])[0]["occurred_at"]
    in_range = [e["type"] for e in entries(None, since=later) if e["subject_id"] == created["id"]]
    assert in_range == ["connection.updated"]
    until = [e["type"] for e in entries(None, until=moment, since=moment) if e["subject_id"] == created["id"]]
    assert until == ["connection.created"]


def test_a_forged_cursor_is_refused(api: InProcessApi) -> None:
    response = api.call("list_activity", query={"cursor": "bm90LWFuLWlk"})
    assert response.status == 400
    assert response.json()["error"]["code"] == "invalid_cursor"


def test_an_unknown_filter_value_is_refused(api: InProcessApi) -> None:
    response = api.call("list_activity", query={"type": "DROP TABLE"})
    assert response.status == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_the_log_of_another_tenants_or_no_connection_is_not_found(api: InProcessApi) -> None:
    created = create(api, name="Owned activity")
    for tenant, connection_id in (("globex", created["id"]), ("acme", "con_" + "0" * 26)):
        response = InProcessApi(tenant).call("list_connection_activity", connection_id=connection_id)
        assert response.status == 404
        assert response.json()["error"]["code"] == "not_found"


def test_a_deleted_connections_log_stays_readable(api: InProcessApi) -> None:
    created = create(api, name="Gone but logged")
    assert api.call("delete_connection", connection_id=created["id"]).status == 204
    assert [e["type"] for e in entries(created["id"])] == ["connection.deleted", "connection.created"]


def test_connecting_and_refreshing_leave_one_entry_each_by_their_trigger(
    flow_api: InProcessApi, provider: OidcProvider, service_env: Resources, monkeypatch: Any
) -> None:
    from oauth_connections.core.config import get_settings
    from tests.unit.scheduled_helpers import age_tokens, emptied_queue, sweep
    from tests.unit.test_client_credentials import create as create_service_account
    from tests.unit.test_client_credentials import get_token

    monkeypatch.setenv("FORCE_REFRESH_MIN_INTERVAL_SECONDS", "0")
    get_settings.cache_clear()
    queue = emptied_queue(service_env.refresh_queue_url)
    tenant = flow_api.tenant
    connection_id = create_service_account(flow_api, provider)["id"]
    assert flow_api.call("start_authorization", connection_id=connection_id, body={}).status == 200
    assert flow_api.call("refresh_connection", connection_id=connection_id).status == 200
    assert "access_token" in get_token(tenant, connection_id, force_refresh=True)
    age_tokens(tenant, connection_id, seconds=700)
    sweep()
    assert queue.drain(tenant).processed == [connection_id]  # routine: not logged one by one
    assert (
        flow_api.call("update_connection", connection_id=connection_id, body={"client_secret": "wrong"}).status == 200
    )
    age_tokens(tenant, connection_id, seconds=700)
    sweep()
    assert queue.drain(tenant).processed == [connection_id]

    log = entries(connection_id, tenant=tenant)
    assert [(e["type"], e["actor"], e["trigger"]) for e in log] == [
        ("connection.reauthorization_required", None, "scheduled"),
        ("connection.updated", "alice", "api"),
        ("connection.refreshed", None, "forced"),
        ("connection.refreshed", "alice", "on_demand"),
        ("connection.connected", "alice", "api"),
        ("connection.created", "alice", "api"),
    ]
    assert log[0]["details"] == {"reason": "invalid_client"}
    assert set(log[4]["details"]["granted_scopes"]) == {"api.read", "api.write"}
    assert log[1]["details"] == {"changes": {"client_secret": "changed"}}


def test_the_browser_flow_records_who_started_it_as_who_connected(
    flow_api: InProcessApi, provider: OidcProvider
) -> None:
    from tests.unit.flow_helpers import connect, create_connection

    connection = create_connection(flow_api, provider)
    connect(flow_api, provider, connection)
    log = entries(connection["id"], tenant=flow_api.tenant)
    assert [(e["type"], e["actor"], e["trigger"]) for e in log] == [
        ("connection.connected", "alice", "api"),
        ("authorization.started", "alice", "api"),
        ("connection.created", "alice", "api"),
    ]
    assert set(log[0]["details"]["granted_scopes"]) >= {"api.read"}


def test_feed_changes_and_runs_leave_one_entry_each(
    fetcher_env: InProcessApi,  # noqa: F811 (the imported fixture)
    feed_server: str,  # noqa: F811
) -> None:
    from oauth_connections.core.config import get_settings
    from oauth_connections.feeds.fetch import record_feed_run
    from tests.unit.test_feeds import feed_body

    api = fetcher_env
    feed = api.call("create_feed", body=feed_body(url=feed_server + "/catalog.xml")).json()
    assert api.call("update_feed", feed_id=feed["id"], body={"schedule": 15}).status == 200
    assert record_feed_run(get_settings(), api.tenant, feed["id"], "manual") == "succeeded"
    assert record_feed_run(get_settings(), api.tenant, feed["id"], "schedule") == "not_modified"  # routine: no entry
    assert api.call("update_feed", feed_id=feed["id"], body={"url": feed_server + "/broken.xml"}).status == 200
    assert record_feed_run(get_settings(), api.tenant, feed["id"], "schedule") == "failed"
    assert api.call("delete_feed", feed_id=feed["id"]).status == 204

    log = [e for e in entries(None, tenant=api.tenant) if e["subject_id"] == feed["id"]]
    assert feed_entries(api, feed["id"]) == log
    assert feed_entries(api, feed["id"], type="feed.run") == [e for e in log if e["type"] == "feed.run"]
    assert [(e["type"], e["actor"], e["trigger"], e["details"].get("status")) for e in log] == [
        ("feed.deleted", "alice", "api", None),
        ("feed.run", None, "scheduled", "failed"),
        ("feed.updated", "alice", "api", None),
        ("feed.run", None, "on_demand", "succeeded"),
        ("feed.updated", "alice", "api", None),
        ("feed.created", "alice", "api", None),
    ]
    assert log[4]["details"]["changes"] == {"schedule": {"old": "rate:60", "new": "rate:15"}}
    assert log[1]["details"]["reason"]


def test_a_reversed_or_far_time_range_is_empty_not_an_error(api: InProcessApi) -> None:
    create(api, name="Ranged activity")
    reversed_range = api.call("list_activity", query={"since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"})
    assert reversed_range.status == 200, reversed_range.text
    assert reversed_range.json() == {"items": [], "next_cursor": None}
    ancient = api.call("list_activity", query={"until": "0001-01-01T00:00:00"})
    assert ancient.status == 200 and ancient.json()["items"] == []
    everything = api.call("list_activity", query={"since": "0001-01-01T00:00:00", "until": "9999-12-31T23:59:59Z"})
    assert everything.status == 200 and everything.json()["items"]
