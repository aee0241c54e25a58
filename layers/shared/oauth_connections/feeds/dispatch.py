"""Queues feed runs: the due ones on the dispatcher's schedule, and one on a tenant's request."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from oauth_connections.core import aws
from oauth_connections.core.caller import Caller
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import Settings
from oauth_connections.core.errors import (
    ConfigurationError,
    NotFoundError,
)
from oauth_connections.core.observability import metrics
from oauth_connections.feeds.service import SHARD_PREFIX, load_for_caller, schedule_next
from oauth_connections.storage.binding import bind_table
from oauth_connections.storage.due import sweep_due
from oauth_connections.storage.feeds import FEEDS, FeedRecord, record_feed_outcome


def _sqs() -> Any:
    return aws.client("sqs")


def enqueue_feed_run(settings: Settings, tenant_id: str, feed_id: str, trigger: str) -> None:
    if not settings.feed_queue_url:
        raise ConfigurationError("FEED_QUEUE_URL is not set")
    body = json.dumps({"tenant_id": tenant_id, "feed_id": feed_id, "trigger": trigger})
    _sqs().send_message(QueueUrl=settings.feed_queue_url, MessageBody=body)


def request_feed_run(settings: Settings, caller: Caller, feed_id: str) -> None:
    record = load_for_caller(settings, caller, feed_id)
    enqueue_feed_run(settings, record.tenant_id, record.feed_id, "manual")


def dispatch_due_feeds(settings: Settings, fired_at: datetime | None = None) -> int:
    """Queue every feed due now, moving its next run forward as it is queued (one fetch per slot).

    `fired_at` is the schedule's own time of this firing; "now" is the later of it and the function's
    clock. On AWS the two differ by the delivery delay only, so the function's clock decides. The local
    stack's sped-up schedules stamp their faster clock, so under test feed schedules keep its pace too.
    """
    bind_table(settings.connections_table_name)
    now = max(utcnow(), fired_at) if fired_at else utcnow()

    def dispatch_page(keys: list[tuple[str, str]]) -> int:
        return sum(_dispatch_if_due(settings, tenant_id, feed_id, now) for tenant_id, feed_id in keys)

    shards = [f"{SHARD_PREFIX}{number:03d}" for number in range(settings.due_shards)]
    queued = sweep_due(FEEDS, shards, now, 100, dispatch_page)
    metrics.add_metric(name="FeedsDispatched", unit=MetricUnit.Count, value=queued)
    return queued


def _dispatch_if_due(settings: Settings, tenant_id: str, feed_id: str, now: datetime) -> bool:
    """Queue one run of the feed if it is still due, moving its next run forward first; whether it was queued."""
    try:
        record = FEEDS.load(tenant_id, feed_id, consistent=True)
    except NotFoundError:
        return False
    if record.due_at is None or record.due_at > now:
        return False
    schedule_next(settings, record, now)
    moved = record_feed_outcome(
        record,
        [
            FeedRecord.next_run_at.set(record.next_run_at),
            FeedRecord.due_shard.set(record.due_shard),
            FeedRecord.due_at.set(record.due_at),
        ],
    )
    if not moved:
        return False  # deleted since it was read
    enqueue_feed_run(settings, tenant_id, feed_id, "schedule")
    return True
