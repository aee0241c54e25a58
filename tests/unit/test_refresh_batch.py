"""RefreshWorkerFunction refreshes the messages of a batch concurrently, bounded by REFRESH_BATCH_CONCURRENCY.

Against the real (embedded) RefreshQueue and a scripted token endpoint that answers slowly: how many
refreshes are at the provider at once, which messages are reported back when some fail, and what a
batch does when the invocation has time for one round of refreshes only.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import boto3
import pytest

from oauth_connections.connections import refresh
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import get_settings
from oauth_connections.oauth import token_endpoint
from oauth_connections.storage.connections import ConnectionRecord, acquire_lease
from tests.conftest import InProcessApi, LambdaContext, Resources, load_handler
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint
from tests.unit.scheduled_helpers import RefreshQueue, body_of, emptied_queue, insert_connected, load, make_due

DELAY_SECONDS = 0.6
FRESH = {"access_token": "fresh", "token_type": "bearer", "expires_in": 3600, "refresh_token": "refresh-new"}


class InFlight:
    """Counts the token requests being answered at once, and the most seen."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self._lock = threading.Lock()

    def arrived(self, _request: Any) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def answered(self) -> None:
        with self._lock:
            self.now -= 1


@pytest.fixture
def in_flight(running_endpoint: ScriptedTokenEndpoint) -> Iterator[InFlight]:
    counter = InFlight()
    running_endpoint.reset()
    running_endpoint.verify = lambda request: counter.arrived(request)
    running_endpoint.default = Scripted(200, FRESH, delay=DELAY_SECONDS, on_answer=counter.answered)
    yield counter
    running_endpoint.verify = None
    running_endpoint.default = Scripted(500, {"error": "server_error"})


@pytest.fixture
def queue(service_env: Resources, monkeypatch: pytest.MonkeyPatch) -> RefreshQueue:
    monkeypatch.setenv("ALLOW_INSECURE_LOOPBACK_URLS", "true")  # the scripted endpoint is on loopback
    get_settings.cache_clear()
    return emptied_queue(service_env.refresh_queue_url)


def due_connections(tenant: str, url: str, count: int) -> list[str]:
    expiring = token_endpoint.TokenSet("old", "Bearer", "refresh-old", int(time.time()) + 60)
    ids = [insert_connected(tenant, url, expiring, name=f"batch {i} {time.time_ns()}") for i in range(count)]
    for connection_id in ids:
        make_due(tenant, connection_id)
    return ids


def receive_all(queue: RefreshQueue, count: int) -> list[dict[str, Any]]:
    batch: list[dict[str, Any]] = []
    while len(batch) < count and (received := queue.receive_batch()):
        batch.extend(received)
    assert len(batch) == count
    return batch


def refreshed_in_one_batch(queue: RefreshQueue, tenant: str, ids: list[str]) -> tuple[Any, list[dict[str, Any]]]:
    """The worker's answer to one batch holding a message for each of `ids`, and that batch."""
    for connection_id in ids:
        queue.send(tenant, connection_id)
    batch = receive_all(queue, len(ids))
    return load_handler("refresh_worker")(queue.sqs_event(batch), LambdaContext(60_000)), batch


def concurrency(monkeypatch: pytest.MonkeyPatch, value: int) -> None:
    monkeypatch.setenv("REFRESH_BATCH_CONCURRENCY", str(value))
    get_settings.cache_clear()


def test_a_batch_is_refreshed_concurrently_up_to_the_setting(
    flow_api: InProcessApi,
    running_endpoint: ScriptedTokenEndpoint,
    in_flight: InFlight,
    queue: RefreshQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    concurrency(monkeypatch, 3)
    ids = due_connections(flow_api.tenant, running_endpoint.url, 6)
    response, batch = refreshed_in_one_batch(queue, flow_api.tenant, ids)
    assert response == {"batchItemFailures": []}
    assert in_flight.most == 3  # three at the provider at once, never more
    assert len(running_endpoint.requests) == 6
    for connection_id in ids:
        assert int(load(flow_api.tenant, connection_id).token_version) == 2
    queue.delete(batch)


def test_one_at_a_time_when_the_setting_says_so(
    flow_api: InProcessApi,
    running_endpoint: ScriptedTokenEndpoint,
    in_flight: InFlight,
    queue: RefreshQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    concurrency(monkeypatch, 1)
    ids = due_connections(flow_api.tenant, running_endpoint.url, 3)
    response, batch = refreshed_in_one_batch(queue, flow_api.tenant, ids)
    assert response == {"batchItemFailures": []}
    assert in_flight.most == 1 and len(running_endpoint.requests) == 3
    queue.delete(batch)


def test_exactly_the_failed_messages_are_reported(
    flow_api: InProcessApi,
    running_endpoint: ScriptedTokenEndpoint,
    in_flight: InFlight,
    queue: RefreshQueue,
    service_env: Resources,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two good connections, one whose tokens no longer decrypt, a body that is no JSON, one without a
    connection: the three failures are reported by id, the others are done, whatever order they end in."""
    concurrency(monkeypatch, 10)
    tenant = flow_api.tenant
    good_one, good_two, broken = due_connections(tenant, running_endpoint.url, 3)
    item = boto3.client("dynamodb").get_item(
        TableName=service_env.table_name,
        Key={"pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": f"CONNECTION#{broken}"}},
    )["Item"]
    altered = bytearray(item["tokens_ciphertext"]["B"])
    altered[-1] ^= 0x01
    boto3.client("dynamodb").update_item(
        TableName=service_env.table_name,
        Key={"pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": f"CONNECTION#{broken}"}},
        UpdateExpression="SET tokens_ciphertext = :t",
        ExpressionAttributeValues={":t": {"B": bytes(altered)}},
    )
    queue.send(tenant, good_one)
    queue.send(tenant, broken)
    queue.send_raw("{not json")
    queue.send(tenant, good_two)
    queue.send_raw('{"tenant_id": "t"}')
    batch = receive_all(queue, 5)
    response = load_handler("refresh_worker")(queue.sqs_event(batch), LambdaContext(60_000))
    failed = {str(item["itemIdentifier"]) for item in response["batchItemFailures"]}
    expected = {
        m["MessageId"] for m in batch if m["Body"] in ("{not json", '{"tenant_id": "t"}') or body_of(m)[1] == broken
    }
    assert len(expected) == 3 and failed == expected
    assert len(response["batchItemFailures"]) == 3
    assert len(running_endpoint.requests) == 2
    for connection_id in (good_one, good_two):
        assert int(load(tenant, connection_id).token_version) == 2
    untouched = load(tenant, broken)
    assert int(untouched.token_version) == 1 and cast(object, untouched.lease_owner) is None
    queue.delete(batch)


def test_a_concurrent_batch_defers_what_starts_without_time_to_finish(
    flow_api: InProcessApi,
    running_endpoint: ScriptedTokenEndpoint,
    in_flight: InFlight,
    queue: RefreshQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two at once and time for one round: the first two are refreshed together, the third is handed back.

    The threads see the invocation's deadline (the leases end before it), or the third would start too.
    """
    concurrency(monkeypatch, 2)
    tenant = flow_api.tenant
    ids = due_connections(tenant, running_endpoint.url, 3)
    for connection_id in ids:
        queue.send(tenant, connection_id)
    batch = receive_all(queue, 3)
    needed = refresh.holder_seconds_needed(get_settings())
    context = LambdaContext(int((needed + DELAY_SECONDS / 2) * 1000))
    response = load_handler("refresh_worker")(queue.sqs_event(batch), context)
    assert response == {"batchItemFailures": [{"itemIdentifier": batch[2]["MessageId"]}]}
    assert in_flight.most == 2 and len(running_endpoint.requests) == 2
    for message in batch[:2]:
        record = load(tenant, body_of(message)[1])
        assert int(record.token_version) == 2
        assert record.refreshed_at is not None
    third = load(tenant, body_of(batch[2])[1])
    assert int(third.token_version) == 1 and cast(object, third.lease_owner) is None
    queue.delete(batch)


def test_concurrent_lease_attempts_on_one_connection_have_one_winner(
    flow_api: InProcessApi, running_endpoint: ScriptedTokenEndpoint, queue: RefreshQueue
) -> None:
    """The single-flight refresh rests on the lease's conditional write being atomic, as DynamoDB's is
    (the embedded AWS serves one DynamoDB request at a time for that): twenty at once, one lease.

    Threads switch far more often than usual meanwhile, as on a loaded machine: an embedded AWS that
    checked the condition and wrote without holding anything would let two of them win.
    """
    [connection_id] = due_connections(flow_api.tenant, running_endpoint.url, 1)
    records = [load(flow_api.tenant, connection_id) for _ in range(20)]
    barrier = threading.Barrier(len(records))
    won: list[tuple[str, bool]] = []
    until = utcnow() + timedelta(seconds=30)

    def attempt(record: ConnectionRecord, owner: str) -> None:
        barrier.wait()
        won.append((owner, acquire_lease(record, owner, until)))

    threads = [threading.Thread(target=attempt, args=(r, f"owner-{n}")) for n, r in enumerate(records)]
    usual = sys.getswitchinterval()
    sys.setswitchinterval(0.00001)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(usual)
    winners = [owner for owner, taken in won if taken]
    assert len(won) == 20 and len(winners) == 1
    assert str(load(flow_api.tenant, connection_id).lease_owner) == winners[0]
