"""RefreshWorkerFunction on the local stack, fed by the RefreshQueue's event source mapping.

Messages go onto the queue as the sweep puts them there; the stack's poller hands them to the worker in
one batch (the template's batch size and batching window), invokes it through the local Lambda runtime
and deletes only what the worker did not report. The good refreshes overlap at a slow provider, and
exactly the failed messages stay on the queue for SQS to deliver again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.refresh_worker import TOKEN, connect_service_account, slow_provider_once_due, token_versions
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import invoke, new_tenant, stored_item
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint

PROVIDER_DELAY_SECONDS = 3.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=tmp_path_factory.mktemp("devstack-batch"),
        schedules=False,
        with_provider=False,
    ) as running:
        yield running


def alter_tokens(stack: Stack, tenant: str, connection_id: str) -> None:
    """One bit of the stored tokens flipped: they no longer decrypt, so the refresh fails unexpectedly."""
    item = stored_item(stack, tenant, connection_id)
    altered = bytearray(item["tokens_ciphertext"]["B"])
    altered[-1] ^= 0x01
    stack.boto3_client("dynamodb").update_item(
        TableName=stack.physical_ids["ConnectionsTable"],
        Key={"pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": f"CONNECTION#{connection_id}"}},
        UpdateExpression="SET tokens_ciphertext = :t",
        ExpressionAttributeValues={":t": {"B": bytes(altered)}},
    )


def worker_log(stack: Stack) -> Iterator[dict[str, Any]]:
    """RefreshWorkerFunction's structured log entries (each line's JSON object; other lines skipped)."""
    for line in stack.function_logs("RefreshWorkerFunction"):
        start = line.find("{")
        if start < 0:
            continue
        try:
            entry = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry


def reported_failures(stack: Stack) -> set[str]:
    return {str(e["message_id"]) for e in worker_log(stack) if e.get("message") == "scheduled refresh failed"}


def invocations_of(stack: Stack, message_ids: set[str]) -> int:
    """How many worker invocations logged these messages (Powertools stamps each line with its request id)."""
    return len({str(e.get("function_request_id")) for e in worker_log(stack) if e.get("message_id") in message_ids})


def test_a_batch_is_refreshed_concurrently_and_exactly_its_failures_stay_queued(
    stack: Stack, running_endpoint: ScriptedTokenEndpoint
) -> None:
    tenant = new_tenant("batch")
    api = ApiClient(stack).as_tenant(tenant)
    good = [connect_service_account(api, running_endpoint, "batch") for _ in range(3)]
    broken = connect_service_account(api, running_endpoint, "batch")
    alter_tokens(stack, tenant, broken)
    versions = token_versions(stack, tenant, good)
    warm = invoke(stack.lambda_client(), {"Records": []}, "RefreshWorkerFunction")
    assert warm.payload == {"batchItemFailures": []}, warm
    slow_provider_once_due(running_endpoint, PROVIDER_DELAY_SECONDS)

    bodies = [json.dumps({"tenant_id": tenant, "connection_id": c}) for c in [*good, broken]]
    bodies += ["{not json", json.dumps({"tenant_id": tenant})]
    sqs = stack.boto3_client("sqs")
    queue_url = stack.physical_ids["RefreshQueue"]
    started = time.monotonic()
    sent = sqs.send_message_batch(
        QueueUrl=queue_url, Entries=[{"Id": str(n), "MessageBody": body} for n, body in enumerate(bodies)]
    )
    message_ids = {int(entry["Id"]): entry["MessageId"] for entry in sent["Successful"]}
    assert len(message_ids) == len(bodies)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(stored_item(stack, tenant, c)["token_version"] != versions[c] for c in good):
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    assert all(stored_item(stack, tenant, c)["token_version"] != versions[c] for c in good)
    # One after another, the three good refreshes alone would take three provider delays.
    assert elapsed < 2.5 * PROVIDER_DELAY_SECONDS, elapsed
    assert len(running_endpoint.requests) == 3

    expected = {message_ids[3], message_ids[4], message_ids[5]}
    while time.monotonic() < deadline and reported_failures(stack) != expected:
        time.sleep(0.2)
    assert reported_failures(stack) == expected
    counts: dict[str, str] = {}
    while time.monotonic() < deadline:
        counts = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        if counts["ApproximateNumberOfMessagesNotVisible"] == "3":
            break
        time.sleep(0.2)
    # The poller deleted the three it was not told about; the three reported wait for redelivery.
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "3"
    assert stored_item(stack, tenant, broken).get("lease_owner") is None


def test_a_batch_larger_than_one_receive_is_refreshed_at_once_and_reports_exactly_its_failures(
    stack: Stack, running_endpoint: ScriptedTokenEndpoint
) -> None:
    """The mapping's BatchSize is above SQS's 10 per receive: the poller gathers one batch from several
    receives within the batching window, the worker refreshes all its good messages at the provider at
    once, and only the failed messages stay queued."""
    tenant = new_tenant("large-batch")
    api = ApiClient(stack).as_tenant(tenant)
    endpoint = running_endpoint
    good = [connect_service_account(api, endpoint, "large batch") for _ in range(14)]
    broken = [connect_service_account(api, endpoint, "large batch") for _ in range(2)]
    for connection_id in broken:
        alter_tokens(stack, tenant, connection_id)
    versions = token_versions(stack, tenant, good)
    slow_provider_once_due(endpoint, PROVIDER_DELAY_SECONDS)
    in_flight = {"now": 0, "most": 0}
    lock = threading.Lock()

    def arrived(_request: object) -> None:
        with lock:
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])

    def answered() -> None:
        with lock:
            in_flight["now"] -= 1

    endpoint.verify = arrived
    endpoint.default = Scripted(body=TOKEN, delay=PROVIDER_DELAY_SECONDS, on_answer=answered)
    bodies = [json.dumps({"tenant_id": tenant, "connection_id": c}) for c in [*good, *broken]]
    bodies += ["{not json", json.dumps({"tenant_id": tenant})]
    sqs = stack.boto3_client("sqs")
    queue_url = stack.physical_ids["RefreshQueue"]
    attributes = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    waiting = int(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=attributes)["Attributes"][attributes[1]])
    message_ids: list[str] = []
    try:
        for start in range(0, len(bodies), 10):  # SendMessageBatch takes at most 10
            entries = [{"Id": str(n), "MessageBody": b} for n, b in enumerate(bodies[start : start + 10])]
            sent = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            message_ids += [e["MessageId"] for e in sorted(sent["Successful"], key=lambda e: int(e["Id"]))]
        assert len(message_ids) == len(bodies) == 18

        deadline = time.monotonic() + 30
        expected, ours = set(message_ids[len(good) :]), set(message_ids)
        while time.monotonic() < deadline and reported_failures(stack) & ours != expected:
            time.sleep(0.2)
        assert reported_failures(stack) & ours == expected
        assert all(stored_item(stack, tenant, c)["token_version"] != versions[c] for c in good)
        assert len(endpoint.requests) == len(good)
        assert in_flight["most"] == len(good)  # all fourteen at the provider at once: one batch, not 10 + 8
        assert invocations_of(stack, ours) == 1
        # Deleted but for the four reported, which wait for redelivery (beside any an earlier test left).
        counts: dict[str, str] = {}
        while time.monotonic() < deadline:
            counts = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=attributes)["Attributes"]
            if counts[attributes[1]] == str(waiting + len(expected)):
                break
            time.sleep(0.2)
        assert counts[attributes[0]] == "0"
        assert counts[attributes[1]] == str(waiting + len(expected))
    finally:
        endpoint.verify = None
