"""Feed items and feed-run items, and their data access."""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)

from oauth_connections.core.clock import utcnow
from oauth_connections.core.ids import FEED_ID_PREFIX
from oauth_connections.storage.collection import Collection, DueItem
from oauth_connections.storage.table import DueIndex, TableModel, conditional_update

FEED_PREFIX = "FEED#"
FEED_RUNS_PREFIX = "FEEDRUNS#"
RUN_PREFIX = "RUN#"


class FeedRecord(DueItem):
    """A tenant's product feed: pk=TENANT#<tenant>, sk=FEED#<id>; in the DueIndex under FEED shards."""

    feed_id = UnicodeAttribute()
    name = UnicodeAttribute()
    url = UnicodeAttribute()
    connection_id = UnicodeAttribute(null=True)
    schedule = UnicodeAttribute()  # "rate:<minutes>" or "cron:<expression>"
    format = UnicodeAttribute()
    enabled = BooleanAttribute(default=True)
    next_run_at = UTCDateTimeAttribute(null=True)
    due_index = DueIndex()
    # The validators of the last good body, sent back as If-None-Match / If-Modified-Since (a 304 is a no-op).
    etag = UnicodeAttribute(null=True)
    last_modified = UnicodeAttribute(null=True)
    # The latest run, whatever its outcome (its run record holds the details).
    last_run_id = UnicodeAttribute(null=True)
    last_status = UnicodeAttribute(null=True)
    last_run_at = UTCDateTimeAttribute(null=True)
    # The last body that passed its format check: the S3 object consumers read, kept when a later run fails.
    last_good_key = UnicodeAttribute(null=True)
    last_good_version = UnicodeAttribute(null=True)
    last_good_at = UTCDateTimeAttribute(null=True)
    last_items = NumberAttribute(null=True)


FEEDS = Collection(FeedRecord, FEED_PREFIX, FEED_ID_PREFIX, "feed")


class FeedRunRecord(TableModel):
    """One fetch of a feed: pk=FEEDRUNS#<tenant>#<feed>, sk=RUN#<time-ordered id>; expires (TTL)."""

    tenant_id = UnicodeAttribute()
    feed_id = UnicodeAttribute()
    run_id = UnicodeAttribute()
    trigger = UnicodeAttribute()
    status = UnicodeAttribute()  # running | succeeded | not_modified | failed
    http_status = NumberAttribute(null=True)
    bytes = NumberAttribute(default=0)
    items = NumberAttribute(null=True)
    duration_ms = NumberAttribute(null=True)
    s3_key = UnicodeAttribute(null=True)
    s3_version = UnicodeAttribute(null=True)
    error_code = UnicodeAttribute(null=True)
    error_message = UnicodeAttribute(null=True)
    started_at = UTCDateTimeAttribute()
    finished_at = UTCDateTimeAttribute(null=True)
    expires_at_epoch = TTLAttribute()


def record_feed_outcome(record: FeedRecord, actions: list[Any]) -> bool:
    """Record a run's outcome on the feed without touching its settings (last writer of these fields wins).

    False if the feed was deleted meanwhile: an update never brings back a fragment of a deleted feed.
    """
    return conditional_update(record, [*actions, FeedRecord.updated_at.set(utcnow())], FeedRecord.pk.exists())


def runs_key(tenant_id: str, feed_id: str) -> str:
    return f"{FEED_RUNS_PREFIX}{tenant_id}#{feed_id}"


def save_run(record: FeedRunRecord) -> None:
    record.save()


def latest_runs(tenant_id: str, feed_id: str, limit: int) -> list[FeedRunRecord]:
    return list(
        FeedRunRecord.query(
            runs_key(tenant_id, feed_id), FeedRunRecord.sk.startswith(RUN_PREFIX), scan_index_forward=False, limit=limit
        )
    )
