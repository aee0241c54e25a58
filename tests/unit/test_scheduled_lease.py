"""RefreshWorkerFunction takes a due connection's lease in its first DynamoDB call, which also reads the
connection: a scheduled refresh is that write and the store. A message the write refuses (the connection
was deleted, is no longer due, or someone else holds its lease), and one whose connection then turns out
not to be refreshable (it needs authorizing again, has no tokens, or is cooling down) ends as it did when
the worker read the connection first, and leaves no lease of its own behind."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, cast

import pytest

from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import get_settings
from oauth_connections.core.errors import NotFoundError
from oauth_connections.oauth import token_endpoint
from oauth_connections.storage.connections import ConnectionRecord, remove_connection
from tests.conftest import InProcessApi, LambdaContext, LogCapture, Resources, load_handler
from tests.support.aws_calls import count_aws_calls
from tests.support.token_endpoint import ScriptedTokenEndpoint
from tests.unit.scheduled_helpers import (
    RefreshQueue,
    answering,
    body_of,
    dynamodb_requests,
    emptied_queue,
    insert_connected,
    load,
    make_due,
    stored_tokens,
)

R = ConnectionRecord
FRESH = {"access_token": "fresh-access", "refresh_token": "refresh-new", "token_type": "Bearer", "expires_in": 3600}


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> Iterator[ScriptedTokenEndpoint]:
    with answering(running_endpoint, FRESH) as answering_endpoint:
        yield answering_endpoint


@pytest.fixture
def queue(service_env: Resources) -> RefreshQueue:
    return emptied_queue(service_env.refresh_queue_url)


def expiring() -> token_endpoint.TokenSet:
    return token_endpoint.TokenSet("access-old", "Bearer", "refresh-old", int(time.time()) + 60, ("read",))


def due_connection(tenant: str, endpoint: ScriptedTokenEndpoint, name: str) -> str:
    connection_id = insert_connected(tenant, endpoint.url, expiring(), name=f"{name} {time.time_ns()}")
    make_due(tenant, connection_id)
    return connection_id


def key_of(params: dict[str, Any]) -> str:
    return str(params["Key"]["sk"]["S"]).removeprefix("CONNECTION#")


def outcomes(service_logs: LogCapture) -> dict[str, str]:
    """The worker's outcome of each message, by message id."""
    logged = [json.loads(line) for line in service_logs.lines if '"scheduled refresh"' in line]
    return {entry["message_id"]: entry["outcome"] for entry in logged}


def test_a_scheduled_refresh_is_two_dynamodb_calls_and_no_kms_call_on_a_warm_worker(
    flow_api: InProcessApi, queue: RefreshQueue, endpoint: ScriptedTokenEndpoint
) -> None:
    tenant = flow_api.tenant
    ids = [due_connection(tenant, endpoint, f"two calls {i}") for i in range(3)]
    for connection_id in ids:
        queue.send(tenant, connection_id)
    assert queue.drain(tenant).failures == []  # a first pass: the worker now knows these connections' keys

    for connection_id in ids:
        make_due(tenant, connection_id)
        queue.send(tenant, connection_id)
    with count_aws_calls(all_threads=True) as calls, dynamodb_requests() as requests:
        drained = queue.drain(tenant)
    assert sorted(drained.processed) == sorted(ids) and drained.failures == []

    dynamodb = {name: n for name, n in calls.items() if name.startswith("dynamodb.")}
    assert dynamodb == {"dynamodb.UpdateItem": 2 * len(ids)}, calls
    assert {name: n for name, n in calls.items() if name.startswith("kms.")} == {}
    for connection_id in ids:
        lease, store = [params for _, params in requests if key_of(params) == connection_id]
        assert lease["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"  # a refusal says why, without a read
        assert "tokens_ciphertext" not in lease["ExpressionAttributeNames"].values()
        assert "tokens_ciphertext" in store["ExpressionAttributeNames"].values()  # then the new tokens' store
        record = load(tenant, connection_id)
        assert record.token_version == 3 and record.status == "connected"
        assert cast(str | None, record.lease_owner) is None
        assert cast(Any, record.due_at) > utcnow()
        assert stored_tokens(tenant, connection_id).access_token == "fresh-access"
    assert len(endpoint.requests) == 2 * len(ids)


def _deleted(tenant: str, connection_id: str) -> None:
    remove_connection(load(tenant, connection_id))


def _not_due(tenant: str, connection_id: str) -> None:
    later = utcnow() + timedelta(minutes=30)
    load(tenant, connection_id).update(actions=[R.due_at.set(later)], add_version_condition=False)


def _leased_elsewhere(tenant: str, connection_id: str) -> None:
    later = utcnow() + timedelta(seconds=60)
    actions: list[Any] = [R.lease_owner.set("another-holder"), R.lease_expires_at.set(later)]
    load(tenant, connection_id).update(actions=actions, add_version_condition=False)


def _reauthorization_required(tenant: str, connection_id: str) -> None:
    actions: list[Any] = [R.status.set("reauthorization_required"), R.status_reason.set("invalid_grant")]
    load(tenant, connection_id).update(actions=actions, add_version_condition=False)


def _without_tokens(tenant: str, connection_id: str) -> None:
    load(tenant, connection_id).update(actions=[R.tokens_ciphertext.remove()], add_version_condition=False)


def _cooling_down(tenant: str, connection_id: str) -> None:
    later = utcnow() + timedelta(minutes=5)
    actions: list[Any] = [R.next_attempt_at.set(later), R.consecutive_failures.set(1)]
    load(tenant, connection_id).update(actions=actions, add_version_condition=False)


# name: (how the connection is left, the outcome, DynamoDB calls: the lease write, and the release when taken)
REFUSED: dict[str, tuple[Callable[[str, str], None], str, list[str]]] = {
    "deleted": (_deleted, "gone", ["UpdateItem"]),
    "not due": (_not_due, "not_due", ["UpdateItem"]),
    "lease held": (_leased_elsewhere, "provider_unavailable", ["UpdateItem"]),
    "reauthorization required": (_reauthorization_required, "reauthorization_required", ["UpdateItem"] * 2),
    "no tokens": (_without_tokens, "not_connected", ["UpdateItem"] * 2),
    "cooling down": (_cooling_down, "provider_unavailable", ["UpdateItem"] * 2),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_message_the_lease_refuses_ends_as_before_and_leaves_no_lease(
    flow_api: InProcessApi, queue: RefreshQueue, endpoint: ScriptedTokenEndpoint, service_logs: LogCapture, case: str
) -> None:
    prepare, outcome, calls = REFUSED[case]
    tenant = flow_api.tenant
    connection_id = due_connection(tenant, endpoint, case)
    prepare(tenant, connection_id)
    before = None if case == "deleted" else load(tenant, connection_id)
    queue.send(tenant, connection_id)

    with count_aws_calls(all_threads=True) as aws_calls, dynamodb_requests() as requests:
        drained = queue.drain(tenant)
    assert drained.processed == [connection_id]
    assert drained.failures == []  # an outcome, not an error for SQS to retry
    assert list(outcomes(service_logs).values()) == [outcome]
    assert [operation for operation, _ in requests] == calls
    assert {key_of(params) for _, params in requests} == {connection_id}
    assert not [name for name in aws_calls if name.startswith(("kms.", "events."))]  # no token opened, no event
    assert endpoint.requests == []

    if before is None:
        with pytest.raises(NotFoundError):  # the refused write did not make the item again
            load(tenant, connection_id)
        return
    after = load(tenant, connection_id)
    assert (after.lease_owner, after.lease_expires_at) == (before.lease_owner, before.lease_expires_at)
    assert (after.status, after.token_version, after.due_at, after.next_attempt_at) == (
        before.status,
        before.token_version,
        before.due_at,
        before.next_attempt_at,
    )
    assert after.consecutive_failures == before.consecutive_failures


def test_a_worker_with_too_little_time_for_a_lease_reads_first_and_takes_none(
    flow_api: InProcessApi,
    queue: RefreshQueue,
    endpoint: ScriptedTokenEndpoint,
    service_logs: LogCapture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Time for the worker to start a message (the provider's deadline and the store) but not for a lease:
    no lease is taken, and the outcome is the one a read of the connection gives."""
    monkeypatch.setenv("OUTBOUND_TIMEOUT_SECONDS", "0.5")  # a message needs 2.5 s; a lease 3 s
    get_settings.cache_clear()
    tenant = flow_api.tenant
    connection_id = due_connection(tenant, endpoint, "short of time")
    gone = due_connection(tenant, endpoint, "short of time, deleted")
    _deleted(tenant, gone)
    queue.send(tenant, connection_id)
    queue.send(tenant, gone)
    batch = queue.receive_batch()
    assert sorted(body_of(m)[1] for m in batch) == sorted([connection_id, gone])

    with dynamodb_requests() as requests:
        response = load_handler("refresh_worker")(queue.sqs_event(batch), LambdaContext(2800))
    assert response["batchItemFailures"] == []
    queue.delete(batch)
    logged = outcomes(service_logs)
    assert {body_of(m)[1]: logged[m["MessageId"]] for m in batch} == {
        connection_id: "provider_unavailable",
        gone: "gone",
    }
    assert sorted(operation for operation, _ in requests) == ["GetItem", "GetItem"]
    assert endpoint.requests == []
    record = load(tenant, connection_id)
    assert cast(str | None, record.lease_owner) is None and record.token_version == 1
