"""Drive the scheduled refresh in-process: the sweep, the real (embedded) refresh queue, and the worker.

The sweep is global: it queues every tenant's due connections from the table. Each test works in a
fresh tenant, so `RefreshQueue.drain` hands the worker only that tenant's messages and deletes the
others unprocessed (leftovers of earlier tests, which a later sweep would queue again anyway).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
import botocore.client

from oauth_connections.connections import refresh_schedule, tokens
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import get_settings
from oauth_connections.core.ids import new_id
from oauth_connections.oauth import token_endpoint
from oauth_connections.storage.binding import bind_table
from oauth_connections.storage.connections import (
    CONNECTIONS,
    ConnectionRecord,
    insert_connection,
)
from tests.conftest import LambdaContext, load_handler, sample_event
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint

R = ConnectionRecord


@contextmanager
def answering(endpoint: ScriptedTokenEndpoint, body: dict[str, Any]) -> Iterator[ScriptedTokenEndpoint]:
    """The scripted token endpoint answering `body` unless a test queues something else; reset around."""
    endpoint.reset()
    endpoint.default = Scripted(200, body)
    yield endpoint
    endpoint.answers.clear()


def emptied_queue(url: str) -> RefreshQueue:
    """The embedded refresh queue, emptied of what earlier tests left."""
    queue = RefreshQueue(url)
    queue.clear()
    return queue


def sweep() -> dict[str, Any]:
    """One run of RefreshSchedulerFunction, on the sample schedule event."""
    result: dict[str, Any] = load_handler("refresh_scheduler")(sample_event("refresh_scheduler"), LambdaContext())
    return result


@contextmanager
def dynamodb_requests() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Yields the (operation, parameters) of every DynamoDB call made in this process while the block runs."""
    requests: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()
    original = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]

    def recording(self: Any, operation_name: str, api_params: Any) -> Any:
        if self.meta.service_model.service_name == "dynamodb":
            with lock:
                requests.append((operation_name, dict(api_params)))
        return original(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = recording  # type: ignore[attr-defined]
    try:
        yield requests
    finally:
        botocore.client.BaseClient._make_api_call = original  # type: ignore[attr-defined]


def body_of(message: dict[str, Any]) -> tuple[str, str]:
    body = json.loads(message["Body"])
    return str(body.get("tenant_id")), str(body.get("connection_id"))


@dataclass
class Drained:
    """What the worker was given, over all its invocations, and which messages it reported failed."""

    processed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    foreign: int = 0


class RefreshQueue:
    """The template's RefreshQueue, read and fed to the worker the way the SQS event source mapping does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqs = boto3.client("sqs")
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        self.arn = attributes["QueueArn"]
        self.region = self.arn.split(":")[3]

    def receive_batch(self) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return [dict(message) for message in response.get("Messages", [])]

    def delete(self, messages: Iterable[dict[str, Any]]) -> None:
        pending = list(messages)
        for offset in range(0, len(pending), 10):
            batch = pending[offset : offset + 10]
            entries: list[Any] = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
            result = self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)
            assert not result.get("Failed"), result

    def clear(self) -> None:
        while batch := self.receive_batch():
            self.delete(batch)

    def send(self, tenant_id: str, connection_id: str) -> None:
        """A message like the sweep's, e.g. a stale duplicate delivered after the connection was handled."""
        self.send_raw(json.dumps({"tenant_id": tenant_id, "connection_id": connection_id}))

    def send_raw(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=body)

    def sqs_event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The worker's event, shaped like events/refresh_worker.json."""
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": dict(m.get("Attributes") or {}),
                    "messageAttributes": dict(m.get("MessageAttributes") or {}),
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.arn,
                    "awsRegion": self.region,
                }
                for m in messages
            ]
        }

    def invoke_worker(self, messages: list[dict[str, Any]]) -> list[str]:
        """One RefreshWorkerFunction invocation; deletes the messages it did not report, returns the reported."""
        response = load_handler("refresh_worker")(self.sqs_event(messages), LambdaContext())
        failed = [str(item["itemIdentifier"]) for item in response["batchItemFailures"]]
        self.delete(m for m in messages if m["MessageId"] not in failed)
        return failed

    def take(self, tenant_id: str) -> list[dict[str, Any]]:
        """Receive every queued message; returns the tenant's (still to be deleted), deletes the others."""
        mine: list[dict[str, Any]] = []
        while batch := self.receive_batch():
            self.delete(m for m in batch if body_of(m)[0] != tenant_id)
            mine.extend(m for m in batch if body_of(m)[0] == tenant_id)
        return mine

    def drain(self, tenant_id: str) -> Drained:
        """Feed every queued message of the tenant to the worker, up to ten per invocation, until none is left."""
        drained = Drained()
        while batch := self.receive_batch():
            mine = [m for m in batch if body_of(m)[0] == tenant_id]
            foreign = [m for m in batch if body_of(m)[0] != tenant_id]
            drained.foreign += len(foreign)
            self.delete(foreign)
            if mine:
                drained.processed.extend(body_of(m)[1] for m in mine)
                drained.failures.extend(self.invoke_worker(mine))
        return drained


# ------------------------------------------------------------------ connections


def connected_record(
    tenant_id: str, token_url: str, token_set: token_endpoint.TokenSet, *, name: str, **attributes: Any
) -> ConnectionRecord:
    """A connected connection as tokens.store_connected leaves it (the tokens applied, status, connected_at,
    and the due attributes from refresh_schedule.apply_due), not yet written."""
    settings = get_settings()
    record = CONNECTIONS.new(
        tenant_id,
        new_id("con"),
        name=name,
        client_id="seeded-client",
        token_url=token_url,
        token_auth_method="none",
        **attributes,
    )
    tokens.apply_tokens(settings, record, token_set)
    record.status = "connected"
    # Obtained an hour ago: the token's expiry alone decides whether it is due now.
    record.connected_at = utcnow() - timedelta(hours=1)
    refresh_schedule.apply_due(settings, record)
    return record


def write_records(records: Iterable[ConnectionRecord]) -> None:
    """Write new connection items in BatchWriteItem calls of 25 (bulk seeding only).

    The embedded AWS deep-copies the whole table for every TransactWriteItems, so thousands of
    insert_connection calls are quadratic. The scheduled refresh never reads the name claims
    insert_connection also writes, so only the connection items are written, with the version a first
    save gives them.
    """
    with R.batch_write() as batch:
        for record in records:
            record.version = 1
            batch.save(record)


def insert_connected(
    tenant_id: str, token_url: str, token_set: token_endpoint.TokenSet, *, name: str, **attributes: Any
) -> str:
    """A pending connection inserted by insert_connection, then connected by tokens.store_connected."""
    settings = get_settings()
    bind_table(settings.connections_table_name)
    record = CONNECTIONS.new(
        tenant_id,
        new_id("con"),
        name=name,
        client_id="seeded-client",
        token_url=token_url,
        token_auth_method="none",
        **attributes,
    )
    insert_connection(record)
    tokens.store_connected(settings, tenant_id, record.connection_id, token_set)
    age_tokens(tenant_id, record.connection_id)  # obtained an hour ago, like connected_record
    return record.connection_id


def load(tenant_id: str, connection_id: str) -> ConnectionRecord:
    return CONNECTIONS.load(tenant_id, connection_id, consistent=True)


def stored_tokens(tenant_id: str, connection_id: str) -> token_endpoint.TokenSet:
    token_set = tokens.decrypt_tokens(get_settings(), load(tenant_id, connection_id))
    assert token_set is not None
    return token_set


def raw_item(table_name: str, tenant_id: str, connection_id: str) -> dict[str, Any]:
    item: dict[str, Any] = boto3.client("dynamodb").get_item(
        TableName=table_name,
        Key={"pk": {"S": f"TENANT#{tenant_id}"}, "sk": {"S": f"CONNECTION#{connection_id}"}},
        ConsistentRead=True,
    )["Item"]
    return item


def make_due(tenant_id: str, connection_id: str, seconds_ago: int = 60) -> None:
    """Time travel: the connection's due time (and a pending cooldown's end) moves into the past."""
    record = load(tenant_id, connection_id)
    past = utcnow() - timedelta(seconds=seconds_ago)
    actions: list[Any] = [
        R.due_at.set(past),
        R.due_shard.set(refresh_schedule.shard_of(connection_id, get_settings().due_shards)),
    ]
    if record.next_attempt_at is not None:
        actions.append(R.next_attempt_at.set(past))
    record.update(actions=actions, add_version_condition=False)


def age_tokens(tenant_id: str, connection_id: str, seconds: int = 3600) -> None:
    """Time travel: the stored tokens were obtained `seconds` ago, and are due as they would then be.

    Test set-up writes carry no version condition: the SDK may retry a write whose answer it lost, and
    a retried versioned write would be refused by its own first attempt."""
    past = utcnow() - timedelta(seconds=seconds)
    record = load(tenant_id, connection_id)
    record.connected_at = past
    record.refreshed_at = past
    due = refresh_schedule.apply_due(get_settings(), record)
    record.update(actions=[R.connected_at.set(past), R.refreshed_at.set(past), *due], add_version_condition=False)
