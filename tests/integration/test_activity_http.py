"""The activity log through the local API: each action leaves exactly one entry naming the token's user (or
the trigger: the schedule, the refresh route, a test), another tenant sees none of them, and no entry holds
the client secret or a token. A connection's log, a feed's log and the tenant's log."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devstack import Stack
from tests.integration.test_connections_http import CLIENT_SECRET, create
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import age_tokens, get_token, new_tenant
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint

RETURN_URL = "http://127.0.0.1:8000/connections"  # an allowed frontend origin of the local stack
UNREACHABLE_FEED = "http://127.0.0.1:9/feed.yml"  # loopback is allowed on the local stack; nothing listens
TOKENS = {"access_token": "first-access", "token_type": "bearer", "expires_in": 3600}
STORED_DATETIME = "%Y-%m-%dT%H:%M:%S.%f%z"
WAIT_SECONDS = 30


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


# ------------------------------------------------------------------ refresh failures, tests and feeds


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> ScriptedTokenEndpoint:
    """A token endpoint that answers 503 unless a test queues another answer."""
    running_endpoint.reset()
    running_endpoint.default = Scripted(503, "")
    return running_endpoint


def connected_service_account(client: ApiClient, endpoint: ScriptedTokenEndpoint, **settings: Any) -> str:
    body = {
        "name": f"service account {uuid.uuid4().hex[:8]}",
        "grant_type": "client_credentials",
        "client_id": "activity-client",
        "client_secret": CLIENT_SECRET,
        "token_auth_method": "client_secret_post",
        "token_url": endpoint.url,
        **settings,
    }
    created = client.post("/connections", json=body)
    assert created.status_code == 201, created.text
    endpoint.queue(Scripted(body=TOKENS))
    connected = client.post(f"/connections/{created.json()['id']}/authorize", json={})
    assert connected.status_code == 200 and connected.json()["status"] == "connected", connected.text
    connection_id: str = created.json()["id"]
    return connection_id


def update_stored(stack: Stack, tenant: str, connection_id: str, expression: str, **values: str | int) -> None:
    """Set up a stored connection's state as time would have left it (strings are datetimes in the past)."""
    attributes = {
        f":{name}": {"N": str(value)} if isinstance(value, int) else {"S": value} for name, value in values.items()
    }
    stack.boto3_client("dynamodb").update_item(
        TableName=stack.physical_ids["ConnectionsTable"],
        Key={"pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": f"CONNECTION#{connection_id}"}},
        UpdateExpression=expression,
        ConditionExpression="attribute_exists(pk)",
        **({"ExpressionAttributeValues": attributes} if attributes else {}),
    )


def ago(seconds: int) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime(STORED_DATETIME)


def wait_for_entry(client: ApiClient, path: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        log = activity_of(client, path)
        if len(log) >= count or time.monotonic() > deadline:
            return log
        time.sleep(0.3)


def test_a_connection_that_turns_error_leaves_one_error_entry_by_the_trigger_that_failed(
    api: ApiClient, stack: Stack, endpoint: ScriptedTokenEndpoint
) -> None:
    tenant = new_tenant("activity-error")
    alice, bob = api.as_tenant(tenant, "alice"), api.as_tenant(tenant, "bob")
    connection_id = connected_service_account(alice, endpoint)
    path = f"/connections/{connection_id}/activity"
    # Failing transiently for two days: the next failure makes it `error` (ERROR_AFTER_SECONDS is a day).
    update_stored(
        stack,
        tenant,
        connection_id,
        "SET failing_since = :since, consecutive_failures = :failures, due_at = :due",
        since=ago(2 * 86_400),
        failures=3,
        due=ago(60),
    )

    stack.fire_schedule("RefreshSchedulerFunction")  # the sweep queues it; the queue runs the worker
    log = wait_for_entry(alice, path, 4)
    assert [(e["type"], e["actor"], e["trigger"]) for e in log] == [
        ("connection.error", None, "scheduled"),
        ("connection.refresh_failed", None, "scheduled"),
        ("connection.connected", "alice", "api"),
        ("connection.created", "alice", "api"),
    ]
    assert log[0]["details"]["reason"] == "token endpoint answered HTTP 503"
    assert alice.get(f"/connections/{connection_id}").json()["status"] == "error"

    # Failing again while `error` is no new status: one more failure entry, no second error entry.
    update_stored(stack, tenant, connection_id, "REMOVE next_attempt_at")
    failed = bob.post(f"/connections/{connection_id}/refresh")
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "provider_unavailable", failed.text
    # Working again: refreshed and recovered, by the user who asked.
    update_stored(stack, tenant, connection_id, "REMOVE next_attempt_at")
    endpoint.queue(Scripted(body=TOKENS))
    recovered = bob.post(f"/connections/{connection_id}/refresh")
    assert recovered.status_code == 200 and recovered.json()["status"] == "connected", recovered.text

    log = activity_of(alice, path)
    assert [(e["type"], e["actor"], e["trigger"]) for e in log[:3]] == [
        ("connection.recovered", "bob", "on_demand"),
        ("connection.refreshed", "bob", "on_demand"),
        ("connection.refresh_failed", "bob", "on_demand"),
    ]
    assert [e["type"] for e in activity_of(alice, path, type="connection.error")] == ["connection.error"]
    errors = [e for e in stack.published_events() if e["detail"].get("connection_id") == connection_id]
    assert [e["detail-type"] for e in errors].count("connection.error") == 1
    assert [e["type"] for e in activity_of(api.as_tenant(new_tenant("activity-other")), "/activity")] == []


def test_the_test_route_leaves_one_tested_entry_and_a_refresh_it_needed_is_the_tests(
    api: ApiClient, stack: Stack, endpoint: ScriptedTokenEndpoint
) -> None:
    tenant = new_tenant("activity-test")
    alice, carol = api.as_tenant(tenant, "alice"), api.as_tenant(tenant, "carol")
    with ScriptedTokenEndpoint() as crm:
        connection_id = connected_service_account(
            alice, endpoint, allowed_urls=[crm.origin + "/api/"], test_url=crm.origin + "/api/me"
        )
        age_tokens(stack, tenant, connection_id)  # old enough for a 401 to refresh them
        crm.queue(Scripted(401, {"error": "expired"}), Scripted(200, {"id": "me"}))
        endpoint.queue(Scripted(body=TOKENS | {"access_token": "second-access"}))
        tested = carol.post(f"/connections/{connection_id}/test")
        assert tested.status_code == 200, tested.text
        assert (tested.json()["ok"], tested.json()["status"]) == (True, 200)
        seen = [r.headers.get("Authorization") for r in crm.requests]
        assert seen[-2:] == ["Bearer first-access", "Bearer second-access"]  # after the test of the connect

    log = activity_of(alice, f"/connections/{connection_id}/activity")
    assert [(e["type"], e["actor"], e["trigger"]) for e in log] == [
        ("connection.tested", "carol", "api"),
        ("connection.refreshed", "carol", "test"),
        ("connection.connected", "alice", "api"),
        ("connection.created", "alice", "api"),
    ]
    assert log[0]["details"] == {"ok": True, "status": 200, "error": None}
    assert "first-access" not in repr(log) and "second-access" not in repr(log)


def test_a_feeds_changes_and_runs_are_on_its_own_log_newest_first_and_only_its_tenant_sees_them(
    api: ApiClient,
) -> None:
    tenant = new_tenant("activity-feed")
    alice, bob = api.as_tenant(tenant, "alice"), api.as_tenant(tenant, "bob")
    created = alice.post("/feeds", json={"name": "activity feed", "url": UNREACHABLE_FEED})
    assert created.status_code == 201, created.text
    feed_id = created.json()["id"]
    path = f"/feeds/{feed_id}/activity"
    assert bob.patch(f"/feeds/{feed_id}", json={"schedule": 15}).status_code == 200
    assert bob.post(f"/feeds/{feed_id}/run").status_code == 202
    log = wait_for_entry(alice, path, 3)
    assert alice.delete(f"/feeds/{feed_id}").status_code == 204

    log = activity_of(alice, path)
    assert [(e["type"], e["actor"], e["trigger"], e["details"].get("status")) for e in log] == [
        ("feed.deleted", "alice", "api", None),
        ("feed.run", None, "on_demand", "failed"),
        ("feed.updated", "bob", "api", None),
        ("feed.created", "alice", "api", None),
    ]
    assert log[2]["details"]["changes"] == {"schedule": {"old": "rate:60", "new": "rate:15"}}
    assert {e["subject_id"] for e in log} == {feed_id}
    assert [e["id"] for e in activity_of(alice, "/activity") if e["subject_id"] == feed_id] == [e["id"] for e in log]
    assert [e["type"] for e in activity_of(alice, path, type="feed.run")] == ["feed.run"]
    assert [e["type"] for e in activity_of(alice, path, user="bob")] == ["feed.updated"]

    pages, cursor = [], None
    while True:
        page = alice.get(path, params={"limit": 3} | ({"cursor": cursor} if cursor else {})).json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [len(items) for items in pages] == [3, 1]
    assert [e["id"] for items in pages for e in items] == [e["id"] for e in log]

    stranger = api.as_tenant(new_tenant("activity-other"), "alice")
    refused = stranger.get(path)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found", refused.text
    assert activity_of(stranger, "/activity") == []
    unknown = alice.get("/feeds/feed_" + "0" * 26 + "/activity")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        assert alice.request(method, path, json={}).status_code == 404, method


def test_token_retrievals_a_refusal_and_edits_leave_one_entry_each_by_their_trigger(
    api: ApiClient, stack: Stack, endpoint: ScriptedTokenEndpoint
) -> None:
    tenant = new_tenant("activity-token")
    alice, bob = api.as_tenant(tenant, "alice"), api.as_tenant(tenant, "bob")
    connection_id = connected_service_account(alice, endpoint)
    age_tokens(stack, tenant, connection_id)  # older than the debounce of a forced refresh
    endpoint.queue(Scripted(body=TOKENS | {"access_token": "forced-access"}))
    assert get_token(stack, tenant, connection_id, force_refresh=True)["access_token"] == "forced-access"
    endpoint.queue(Scripted(400, {"error": "invalid_client"}))
    refused = get_token(stack, tenant, connection_id, min_valid_seconds=86_400)
    assert refused["error"]["code"] == "reauthorization_required", refused
    # A new client secret retries the refused connection once; a new client id then ends the grant.
    endpoint.queue(Scripted(body=TOKENS | {"access_token": "retried-access"}))
    edited = bob.patch(f"/connections/{connection_id}", json={"client_secret": CLIENT_SECRET + "-new"})
    assert edited.status_code == 200 and edited.json()["status"] == "connected", edited.text
    ended = bob.patch(f"/connections/{connection_id}", json={"client_id": "another-client"})
    assert ended.status_code == 200 and ended.json()["status"] == "pending", ended.text

    log = activity_of(alice, f"/connections/{connection_id}/activity")
    assert [(e["type"], e["actor"], e["trigger"]) for e in log] == [
        ("connection.grant_ended", None, "edit"),
        ("connection.updated", "bob", "api"),
        ("connection.refreshed", None, "edit"),
        ("connection.updated", "bob", "api"),
        ("connection.reauthorization_required", None, "on_demand"),
        ("connection.refreshed", None, "forced"),
        ("connection.connected", "alice", "api"),
        ("connection.created", "alice", "api"),
    ]
    assert log[0]["details"] == {"changed_fields": ["client_id"], "revoked": False}
    assert log[4]["details"] == {"reason": "invalid_client"}
    assert log[3]["details"] == {"changes": {"client_secret": "changed"}}
    assert not [secret for secret in ("forced-access", "retried-access", CLIENT_SECRET) if secret in repr(log)]
