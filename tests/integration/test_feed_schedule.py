"""Feeds run by their own schedule on the local stack, with nobody asking for a run.

The stack's schedules run SPEEDUP times faster than real time: FeedDispatcherFunction (rate(1 minute))
fires every 60/SPEEDUP seconds, and each firing's event carries the stack's faster clock, which the
dispatcher takes as "now". So a feed on the cron "* * * * *" comes due at every firing: within seconds
the schedule alone has fetched it from the loopback feed server (tests/support/feed_server.py) into
FeedsBucket, and fetched it again, conditionally, to a 304. No test calls POST /feeds/{id}/run or a
function directly; everything goes through the local API, the dispatcher's schedule, FeedFetchQueue
and FeedFetchFunction.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.feed_server import Catalog, FeedServer, catalog_facts
from tests.support.stack_fixtures import ApiClient

SPEEDUP = 30.0  # the dispatcher fires every two seconds
OFFERS = 1_500
WAIT_SECONDS = 60.0


@pytest.fixture(scope="module")
def scheduled_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=tmp_path_factory.mktemp("devstack-feed-schedule"),
        schedules=True,
        schedule_speedup=SPEEDUP,
        with_provider=False,
        echo_logs=False,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
def api(scheduled_stack: Stack) -> ApiClient:
    return ApiClient(scheduled_stack).as_tenant(f"sched-{uuid.uuid4().hex[:10]}")


def create_feed(
    api: ApiClient, url: str, schedule: str, connection_id: str | None = None, *, enabled: bool = True
) -> str:
    body: dict[str, Any] = {
        "name": f"feed {uuid.uuid4().hex[:8]}",
        "url": url,
        "format": "yml",
        "schedule": schedule,
        "enabled": enabled,
    }
    if connection_id:
        body["connection_id"] = connection_id
    response = api.post("/feeds", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def finished_runs(api: ApiClient, feed_id: str) -> list[dict[str, Any]]:
    """The feed's runs that have ended, oldest first."""
    response = api.get(f"/feeds/{feed_id}/runs", params={"limit": 100})
    assert response.status_code == 200, response.text
    return [run for run in reversed(response.json()["items"]) if run["status"] != "running"]


def wait_for(what: str, probe: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while not (found := probe()):
        assert time.monotonic() < deadline, f"no {what} within {WAIT_SECONDS} s"
        time.sleep(0.25)
    return found


def queue_depth(stack: Stack, logical_id: str) -> int:
    attributes = stack.boto3_client("sqs").get_queue_attributes(
        QueueUrl=stack.physical_ids[logical_id],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def stop_schedule(api: ApiClient, feed_id: str) -> None:
    response = api.patch(f"/feeds/{feed_id}", json={"enabled": False})
    assert response.status_code == 200, response.text
    assert response.json()["next_run_at"] is None


def test_a_cron_feed_is_fetched_by_its_schedule_then_not_modified(
    scheduled_stack: Stack, api: ApiClient, feed_server: FeedServer
) -> None:
    path = f"/public/{uuid.uuid4().hex[:8]}/catalog.yml"
    url = feed_server.serve(path, Catalog(offers=OFFERS))
    facts = catalog_facts(OFFERS)
    feed_id = create_feed(api, url, "* * * * *")

    runs = wait_for("second scheduled run", lambda: (found := finished_runs(api, feed_id))[1:] and found)
    stop_schedule(api, feed_id)

    first, second = runs[0], runs[1]
    assert all(run["trigger"] == "schedule" for run in runs), runs
    assert (first["status"], first["http_status"], first["items"], first["bytes"]) == (
        "succeeded",
        200,
        OFFERS,
        facts.size,
    ), first
    assert (second["status"], second["http_status"], second["items"], second["bytes"]) == (
        "not_modified",
        304,
        None,
        0,
    ), second
    assert first["error_code"] is None and second["error_code"] is None

    requests_seen = feed_server.requests_to(path)
    assert [r.status for r in requests_seen[:2]] == [200, 304]
    assert requests_seen[0].if_none_match is None
    assert requests_seen[1].if_none_match == facts.etag

    stored = scheduled_stack.boto3_client("s3").get_object(
        Bucket=scheduled_stack.physical_ids["FeedsBucket"], Key=first["s3_key"]
    )
    assert stored["VersionId"] == first["s3_version"]
    assert hashlib.sha256(stored["Body"].read()).hexdigest() == facts.sha256
    view = api.get(f"/feeds/{feed_id}").json()
    assert view["last_items"] == OFFERS
    assert view["last_good_at"] is not None


def test_a_feed_whose_connection_was_deleted_fails_and_leaves_its_schedule(
    scheduled_stack: Stack, api: ApiClient, feed_server: FeedServer
) -> None:
    path = f"/protected/{uuid.uuid4().hex[:8]}/catalog.yml"
    url = feed_server.serve(path, Catalog(offers=OFFERS), protected=True)
    created = api.post(
        "/connections",
        json={
            "name": f"gone {uuid.uuid4().hex[:8]}",
            "client_id": "feeds-client",
            "client_secret": "feeds-secret",
            "authorization_url": "https://auth.example.com/authorize",
            "token_url": "https://auth.example.com/token",
            "scopes": ["api.read"],
            "allowed_urls": [feed_server.url("/protected/")],
        },
    )
    assert created.status_code == 201, created.text
    connection_id = created.json()["id"]
    # Disabled until the connection is gone, so that no run can come between the two.
    feed_id = create_feed(api, url, "* * * * *", connection_id, enabled=False)
    deleted = api.delete(f"/connections/{connection_id}")
    assert deleted.status_code == 204, deleted.text
    enabled = api.patch(f"/feeds/{feed_id}", json={"enabled": True})
    assert enabled.status_code == 200, enabled.text

    wait_for("failed scheduled run", lambda: finished_runs(api, feed_id))
    view = wait_for(
        "stopped schedule", lambda: (found := api.get(f"/feeds/{feed_id}").json())["enabled"] is False and found
    )
    assert (view["next_run_at"], view["last_status"]) == (None, "failed")
    # Every queued fetch is done (none waits for redelivery), and no further run comes.
    wait_for("empty feed queue", lambda: queue_depth(scheduled_stack, "FeedFetchQueue") == 0)
    runs = finished_runs(api, feed_id)
    time.sleep(3 * 60 / SPEEDUP)  # three more firings of the dispatcher
    response = api.get(f"/feeds/{feed_id}/runs", params={"limit": 100})
    assert len(response.json()["items"]) == len(runs), response.json()
    for run in runs:
        assert run["trigger"] == "schedule", run
        assert (run["status"], run["error_code"]) == ("failed", "connection_not_found"), run
        assert "no longer exists" in run["error_message"], run
        assert run["finished_at"] and run["s3_key"] is None, run
    assert queue_depth(scheduled_stack, "FeedFetchQueue") == 0
    assert queue_depth(scheduled_stack, "FeedFetchDeadLetterQueue") == 0
    assert feed_server.requests_to(path) == []  # no token, so no request
