"""Product feeds: the tenant's feed settings, their schedule, and dispatching due fetches."""

from __future__ import annotations

import zlib
from datetime import datetime

from oauth_connections.connections import activity
from oauth_connections.core.caller import Caller
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import Settings
from oauth_connections.core.errors import (
    NotFoundError,
    ValidationFailedError,
)
from oauth_connections.core.ids import CONNECTION_ID_PREFIX, FEED_ID_PREFIX, is_id, new_id
from oauth_connections.core.observability import logger
from oauth_connections.core.views import view_of
from oauth_connections.feeds.cron import next_run
from oauth_connections.feeds.models import FeedCreate, FeedOut, FeedPage, FeedRunList, FeedRunOut, FeedUpdate
from oauth_connections.security.netguard import is_under
from oauth_connections.storage.binding import bind_table
from oauth_connections.storage.connections import CONNECTIONS
from oauth_connections.storage.feeds import FEEDS, FeedRecord, latest_runs

SHARD_PREFIX = "FEED#"


def feed_shard(feed_id: str, shards: int) -> str:
    return f"{SHARD_PREFIX}{zlib.crc32(feed_id.encode()) % shards:03d}"


def stored_schedule(schedule: int | str) -> str:
    return f"rate:{schedule}" if isinstance(schedule, int) else f"cron:{schedule}"


def public_schedule(stored: str) -> int | str:
    kind, _, value = stored.partition(":")
    return int(value) if kind == "rate" else value


def schedule_next(settings: Settings, record: FeedRecord, after: datetime) -> None:
    """Set when the feed runs next, and its place in the due index (none while disabled)."""
    if not record.enabled:
        record.next_run_at = record.due_shard = record.due_at = None
        return
    record.next_run_at = next_run(record.schedule, after)
    record.due_shard = feed_shard(record.feed_id, settings.due_shards)
    record.due_at = record.next_run_at


def to_view(record: FeedRecord) -> FeedOut:
    schedule = public_schedule(record.schedule)
    return view_of(FeedOut, record, id=record.feed_id, schedule=schedule, version=int(record.settings_version or 1))


def _check_connection(caller: Caller, connection_id: str | None, url: str) -> None:
    """A feed may only use its own tenant's connection, and only for a URL the connection allows."""
    if connection_id is None:
        return
    if not is_id(connection_id, CONNECTION_ID_PREFIX):
        raise ValidationFailedError("connection_id names no connection of this tenant")
    try:
        connection = CONNECTIONS.load(caller.tenant_id, connection_id)
    except NotFoundError as error:
        raise ValidationFailedError("connection_id names no connection of this tenant") from error
    if not any(is_under(url, base) for base in connection.allowed_urls or []):
        raise ValidationFailedError("the feed url is not under the connection's allowed_urls")


def load_for_caller(settings: Settings, caller: Caller, feed_id: str) -> FeedRecord:
    bind_table(settings.connections_table_name)
    return FEEDS.load_requested(caller.tenant_id, feed_id)


def create_feed(settings: Settings, caller: Caller, request: FeedCreate) -> FeedOut:
    bind_table(settings.connections_table_name)
    _check_connection(caller, request.connection_id, request.url)
    feed_id = new_id(FEED_ID_PREFIX)
    record = FEEDS.new(
        caller.tenant_id,
        feed_id,
        name=request.name,
        url=request.url,
        connection_id=request.connection_id,
        schedule=stored_schedule(request.schedule),
        format=request.format,
        enabled=request.enabled,
    )
    schedule_next(settings, record, record.created_at)
    FEEDS.insert(record)
    logger.info("feed created", extra={"tenant_id": caller.tenant_id, "feed_id": feed_id})
    _record(settings, caller, feed_id, "feed.created", name=record.name, connection_id=record.connection_id)
    return to_view(record)


def _record(settings: Settings, caller: Caller, feed_id: str, kind: str, **details: object) -> None:
    activity.record_activity(settings, caller.tenant_id, feed_id, kind, actor=caller.user_id, trigger="api", **details)


def get_feed(settings: Settings, caller: Caller, feed_id: str) -> FeedOut:
    return to_view(load_for_caller(settings, caller, feed_id))


def list_feeds(settings: Settings, caller: Caller, limit: int, cursor: str | None) -> FeedPage:
    bind_table(settings.connections_table_name)
    records, next_cursor = FEEDS.page(caller.tenant_id, limit, cursor)
    return FeedPage(items=[to_view(r) for r in records], next_cursor=next_cursor)


def update_feed(settings: Settings, caller: Caller, feed_id: str, request: FeedUpdate, if_match: int | None) -> FeedOut:
    """Apply a partial update under the settings version read (the ETag, see Collection.edit): a run or
    the schedule moving on meanwhile does not refuse it."""
    record = load_for_caller(settings, caller, feed_id)
    changes = request.model_dump(include=request.model_fields_set)
    if "schedule" in changes:
        changes["schedule"] = stored_schedule(changes["schedule"])
    old_values = {field: getattr(record, field) for field in changes}

    def change(record: FeedRecord) -> None:
        for field, value in changes.items():
            setattr(record, field, value)
        if {"connection_id", "url"} & request.model_fields_set:
            _check_connection(caller, record.connection_id, record.url)
        if {"schedule", "enabled"} & request.model_fields_set:
            schedule_next(settings, record, utcnow())
        if {"url", "connection_id", "format"} & request.model_fields_set:
            record.etag = record.last_modified = None  # the next fetch is a full one

    record = FEEDS.edit(record, change, if_match)
    _record(settings, caller, feed_id, "feed.updated", changes=activity.field_changes(old_values, changes))
    return to_view(record)


def delete_feed(settings: Settings, caller: Caller, feed_id: str) -> None:
    record = load_for_caller(settings, caller, feed_id)
    FEEDS.delete(record)
    logger.info("feed deleted", extra={"tenant_id": caller.tenant_id, "feed_id": feed_id})
    _record(settings, caller, feed_id, "feed.deleted", name=record.name)


def list_runs(settings: Settings, caller: Caller, feed_id: str, limit: int) -> FeedRunList:
    record = load_for_caller(settings, caller, feed_id)
    runs = latest_runs(record.tenant_id, record.feed_id, limit)
    return FeedRunList(items=[view_of(FeedRunOut, run, id=run.run_id) for run in runs])
