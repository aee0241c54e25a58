"""The scheduled refresh: a sweep finds due connections through the sparse DueIndex (never a Scan) and
queues them; workers refresh each through the same single-flight refresh as GetTokenFunction."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from oauth_connections.connections.refresh import (
    TokenError,
    new_lease,
    refresh_connection,
    refresh_leased,
    refusal_while_held,
)
from oauth_connections.connections.refresh_schedule import shard_of
from oauth_connections.core import aws
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import Settings
from oauth_connections.core.errors import ConfigurationError, NotFoundError
from oauth_connections.core.observability import logger, metrics
from oauth_connections.storage.binding import bind_table
from oauth_connections.storage.connections import CONNECTIONS, ConnectionRecord, acquire_due_lease
from oauth_connections.storage.due import sweep_due

SQS_BATCH = 10
PAGE_SIZE = 100


def _sqs() -> Any:
    return aws.client("sqs")


@dataclass(frozen=True)
class SweepResult:
    enqueued: int
    shards: int


def sweep(settings: Settings) -> SweepResult:
    """Queue every connection due now, a few shards at once (storage/due.py)."""
    if not settings.refresh_queue_url:
        raise ConfigurationError("REFRESH_QUEUE_URL is not set")
    bind_table(settings.connections_table_name)
    queue_url = settings.refresh_queue_url
    shards = [shard_of_number(number) for number in range(settings.due_shards)]
    enqueued = sweep_due(CONNECTIONS, shards, utcnow(), PAGE_SIZE, lambda keys: _enqueue(queue_url, keys))
    metrics.add_metric(name="RefreshDueBacklog", unit=MetricUnit.Count, value=enqueued)
    logger.info("refresh sweep", extra={"enqueued": enqueued, "shards": settings.due_shards})
    return SweepResult(enqueued=enqueued, shards=settings.due_shards)


def shard_of_number(number: int) -> str:
    return f"DUE#{number:03d}"


def _enqueue(queue_url: str, keys: list[tuple[str, str]]) -> int:
    sent = 0
    for offset in range(0, len(keys), SQS_BATCH):
        batch = keys[offset : offset + SQS_BATCH]
        entries = [
            {"Id": str(i), "MessageBody": json.dumps({"tenant_id": tenant, "connection_id": connection})}
            for i, (tenant, connection) in enumerate(batch)
        ]
        result = _sqs().send_message_batch(QueueUrl=queue_url, Entries=entries)
        failed = result.get("Failed") or []
        if failed:
            logger.error("some refresh messages were not queued", extra={"failed": len(failed)})
        sent += len(entries) - len(failed)
    return sent


def process(settings: Settings, body: dict[str, Any]) -> str:
    """Refresh one queued connection if it is still due; returns what happened.

    Failures the connection records itself (backoff, re-authorization) are outcomes, not errors: the
    message is done. Only unexpected errors propagate, so SQS retries them and finally dead-letters them.
    """
    tenant_id, connection_id = str(body["tenant_id"]), str(body["connection_id"])
    bind_table(settings.connections_table_name)
    started = time.monotonic()
    try:
        outcome = _refresh_if_due(settings, tenant_id, connection_id)
    except TokenError as error:
        metrics.add_metric(name="RefreshFailed", unit=MetricUnit.Count, value=1)
        return error.code
    if outcome == "refreshed":
        metrics.add_metric(name="RefreshSucceeded", unit=MetricUnit.Count, value=1)
        latency = (time.monotonic() - started) * 1000
        metrics.add_metric(name="RefreshLatency", unit=MetricUnit.Milliseconds, value=latency)
    return outcome


def _refresh_if_due(settings: Settings, tenant_id: str, connection_id: str) -> str:
    """The first DynamoDB call takes the lease, on the condition that the connection is still due, and
    returns the item either way: two calls per refresh (this one and the store), not a read before them.

    Refused, the item as it stood tells why: deleted, no longer due, or someone else's lease. With too
    little time left for a lease, nothing is taken and the connection is read first, as GetToken does.
    """
    lease = new_lease(settings)
    if lease is None:
        return _refresh_after_read(settings, tenant_id, connection_id)
    now = utcnow()
    attempt = acquire_due_lease(tenant_id, connection_id, lease.owner, lease.until, now)
    if attempt.record is None:
        return "gone"
    if not _due(attempt.record, now):
        return "not_due"
    _note_shard(settings, attempt.record)
    if not attempt.taken:
        raise refusal_while_held(attempt.record)
    refresh_leased(settings, attempt.record, lease, reason="scheduled")
    return "refreshed"


def _refresh_after_read(settings: Settings, tenant_id: str, connection_id: str) -> str:
    try:
        record = CONNECTIONS.load(tenant_id, connection_id, consistent=True)
    except NotFoundError:
        return "gone"
    if not _due(record, utcnow()):
        return "not_due"
    _note_shard(settings, record)
    refresh_connection(settings, record, reason="scheduled", wait=False)
    return "refreshed"


def _due(record: ConnectionRecord, now: datetime) -> bool:
    """Still due; not when refreshed meanwhile (on demand or by an earlier message)."""
    return record.due_at is not None and record.due_at <= now


def _note_shard(settings: Settings, record: ConnectionRecord) -> None:
    if record.due_shard != shard_of(record.connection_id, settings.due_shards):
        logger.info("due shard changed", extra={"connection_id": record.connection_id})
