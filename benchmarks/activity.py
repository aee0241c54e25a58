"""The activity log's DynamoDB writes, counted: per API action (in-process, the functions' own handlers) and
per scheduled refresh (the sweep, then the worker on the queue), each against the embedded AWS.

Counted are the PutItem calls of items under ACTIVITY# keys (an entry is two: the subject's log and the
tenant's), next to every DynamoDB write the same action makes, so the note says what the log adds on top.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint

ACTIVITY = "ACTIVITY#"
RETURN_ORIGIN = "https://app.example.com"
SCHEDULED = 10  # connections per scheduled case


@contextmanager
def settings_env(**values: str) -> Iterator[None]:
    """Environment variables of the service for one section, the cached settings read again around it."""
    from oauth_connections.core.config import get_settings

    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


def writes_of(call: Callable[[], Any]) -> tuple[int, int]:
    """(activity puts, all DynamoDB writes) of one call, in every thread (the refresh worker's too)."""
    from tests.support.aws_calls import count_item_writes

    with count_item_writes(ACTIVITY, all_threads=True) as calls:
        call()
    return calls[f"PutItem {ACTIVITY}"], sum(n for name, n in calls.items() if " " not in name)


def measure(env: Any) -> list[tuple[str, str, str]]:
    with settings_env(ALLOWED_RETURN_ORIGINS=RETURN_ORIGIN), ScriptedTokenEndpoint() as failing:
        failing.default = Scripted(503, "")
        actions = per_api_action(env)
        scheduled = per_scheduled_refresh(env, failing.url)
    puts = sorted({n for n, _ in actions.values()})
    return [
        (
            "activity writes per API action",
            " or ".join(str(n) for n in puts),
            "PutItem under ACTIVITY# keys; "
            + ", ".join(f"{name} {n} (of {total})" for name, (n, total) in actions.items())
            + " DynamoDB item writes in all",
        ),
        *(
            (f"activity writes per scheduled refresh, {case}", f"{n:g}", f"of {total:g} DynamoDB item writes; {note}")
            for case, (n, total, note) in scheduled.items()
        ),
    ]


def per_api_action(env: Any) -> dict[str, tuple[int, int]]:
    from tests.conftest import InProcessApi

    api = InProcessApi(env.tenant)
    measured: dict[str, tuple[int, int]] = {}
    body = {
        "name": f"activity {time.time_ns()}",
        "client_id": "bench-client",
        "client_secret": "bench-secret",
        "authorization_url": "https://auth.example.com/authorize",
        "token_url": env.token_endpoint_url,
    }
    made: dict[str, Any] = {}

    def call(function: str, expected: int, **fields: Any) -> Callable[[], None]:
        def run() -> None:
            response = api.call(function, **fields)
            assert response.status == expected, response.text
            made[function] = response.json() if response.text else None

        return run

    measured["create"] = writes_of(call("create_connection", 201, body=body))
    connection_id = made["create_connection"]["id"]
    measured["update"] = writes_of(call("update_connection", 200, connection_id=connection_id, body={"name": "x"}))
    measured["authorization start"] = writes_of(
        call("start_authorization", 200, connection_id=connection_id, body={"return_url": RETURN_ORIGIN + "/done"})
    )
    measured["delete"] = writes_of(call("delete_connection", 204, connection_id=connection_id))

    origin = env.token_endpoint_url.rsplit("/", 1)[0]  # it answers a GET of any path with 200
    service = body | {
        "name": f"service {time.time_ns()}",
        "grant_type": "client_credentials",
        "allowed_urls": [origin + "/api/"],
        "test_url": origin + "/api/me",
    }
    service.pop("authorization_url")
    call("create_connection", 201, body=service)()
    service_id = made["create_connection"]["id"]
    measured["connect (client credentials)"] = writes_of(
        call("start_authorization", 200, connection_id=service_id, body={})
    )
    measured["refresh route"] = writes_of(call("refresh_connection", 200, connection_id=service_id))
    measured["connection test"] = writes_of(call("test_connection", 200, connection_id=service_id))
    assert made["test_connection"]["ok"] is True, made["test_connection"]

    feed = {"name": "activity feed", "url": origin + "/feed.yml"}
    measured["feed create"] = writes_of(call("create_feed", 201, body=feed))
    feed_id = made["create_feed"]["id"]
    measured["feed update"] = writes_of(call("update_feed", 200, feed_id=feed_id, body={"schedule": 15}))
    measured["feed delete"] = writes_of(call("delete_feed", 204, feed_id=feed_id))
    return measured


def per_scheduled_refresh(env: Any, failing_url: str) -> dict[str, tuple[float, float, str]]:
    """Due connections through one sweep and the worker: refreshed, failing, and failing long enough to turn
    `error` (ERROR_AFTER_SECONDS, a day by default)."""
    from oauth_connections.storage.connections import CONNECTIONS, ConnectionRecord
    from tests.conftest import InProcessApi

    def run(ids: list[str]) -> tuple[float, float]:
        queued = env.sweep()
        assert queued == len(ids), (queued, len(ids))
        puts, total = writes_of(env.drain_refresh_queue)
        return puts / len(ids), total / len(ids)

    cases: dict[str, tuple[float, float, str]] = {}
    cases["success"] = (*run(env.due_connections(SCHEDULED)), "routine: not logged one by one")
    failing_ids = env.due_connections(SCHEDULED, token_url=failing_url)
    cases["failure"] = (*run(failing_ids), "connection.refresh_failed")
    turning = env.due_connections(SCHEDULED, token_url=failing_url)
    long_ago = datetime.now(UTC) - timedelta(days=2)
    for connection_id in turning:
        CONNECTIONS.load(env.tenant, connection_id).update(
            actions=[ConnectionRecord.failing_since.set(long_ago), ConnectionRecord.consecutive_failures.set(3)]
        )
    cases["failure that turns it error"] = (*run(turning), "connection.refresh_failed and connection.error")
    failed = [*failing_ids, *turning]
    api = InProcessApi(env.tenant)
    for connection_id in failed:  # due again after their backoff: not for the sections that follow
        assert api.call("delete_connection", connection_id=connection_id).status == 204
    return cases
