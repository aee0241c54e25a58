"""The activity log: what happened to a connection or feed, who did it (the caller's user) or what did it
(the trigger), and when. Entries hold names, statuses, reasons and non-secret values only: a secret is
recorded as "changed", a token never.

An entry reports a change that is already stored, so recording never undoes or fails it: a failed put is
logged and counted (ActivityNotRecorded) and the caller goes on.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import BaseModel, Field

from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import Settings
from oauth_connections.core.ids import ACTIVITY_ID_PREFIX, FEED_ID_PREFIX, is_id, new_id
from oauth_connections.core.observability import logger
from oauth_connections.core.views import view_of
from oauth_connections.storage.activity import (
    ActivityRecord,
    page_activity,
    put_activity,
    subject_log_key,
    tenant_log_key,
)
from oauth_connections.storage.binding import bind_table
from oauth_connections.storage.connections import CONNECTIONS
from oauth_connections.storage.feeds import FEEDS

NOT_RECORDED_METRIC = "ActivityNotRecorded"
SECRET_FIELDS = frozenset({"client_secret", "certificate_thumbprint"})  # write-only: only "changed" is shown
CHANGED = "changed"

# Who or what acted: a user through the API, or one of the service's own triggers.
Trigger = Literal["api", "scheduled", "on_demand", "forced", "test", "provider", "edit"]


def record_activity(
    settings: Settings,
    tenant_id: str,
    subject_id: str,
    kind: str,
    /,
    *,
    actor: str | None,
    trigger: Trigger,
    **details: Any,
) -> None:
    """Append one entry to the subject's and the tenant's log; a failure is logged and counted, never raised."""
    bind_table(settings.connections_table_name)
    now = utcnow()
    activity_id = new_id(ACTIVITY_ID_PREFIX, now)
    record = ActivityRecord(
        tenant_log_key(tenant_id),
        activity_id,
        tenant_id=tenant_id,
        activity_id=activity_id,
        type=kind,
        subject_id=subject_id,
        actor=actor,
        trigger=trigger,
        details=json.dumps(details, default=str, sort_keys=True),
        occurred_at=now,
        expires_at_epoch=now + timedelta(days=settings.activity_retention_days),
    )
    problem = put_activity(record)
    if problem is not None:
        logger.error(
            "activity not recorded", extra={"activity_type": kind, "subject_id": subject_id, "problem": problem}
        )
        with single_metric(name=NOT_RECORDED_METRIC, unit=MetricUnit.Count, value=1) as metric:
            metric.add_metadata(key="activity_type", value=kind)


# What asked for a refresh (refresh.py's reasons), as the activity log names it.
REFRESH_TRIGGERS: dict[str, Trigger] = {
    "scheduled": "scheduled",
    "requested": "on_demand",
    "expiring": "on_demand",
    "forced": "forced",
    "test": "test",
    "client_secret_changed": "edit",
}


def record_refresh(
    settings: Settings,
    tenant_id: str,
    connection_id: str,
    kind: str,
    asked_by: str,
    actor: str | None,
    /,
    **details: Any,
) -> None:
    """An outcome of a refresh, by what asked for it (refresh.py's reason) and the user, if a user asked."""
    trigger = REFRESH_TRIGGERS.get(asked_by, "on_demand")
    record_activity(settings, tenant_id, connection_id, kind, actor=actor, trigger=trigger, **details)


def field_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The fields an edit changed, each with its old and new value; a secret only as "changed"."""
    changes: dict[str, Any] = {}
    for field in sorted(after):
        if field in SECRET_FIELDS:
            changes[field] = CHANGED
        elif before.get(field) != after[field]:
            changes[field] = {"old": before.get(field), "new": after[field]}
    return changes


class ActivityOut(BaseModel):
    id: str
    type: str = Field(description="What happened: connection.created, connection.updated, ...")
    subject_id: str = Field(description="The connection (con_...) or feed (feed_...) it happened to")
    actor: str | None = Field(description="The user who acted (the token's user claim); null for the service")
    trigger: str = Field(description="api (a user's request), scheduled, on_demand, forced, test, provider, edit")
    details: dict[str, Any]
    occurred_at: datetime


class ActivityPage(BaseModel):
    items: list[ActivityOut]
    next_cursor: str | None = None


def _view(record: ActivityRecord) -> ActivityOut:
    return view_of(ActivityOut, record, id=record.activity_id, details=record.detail_fields)


def list_activity(
    settings: Settings,
    tenant_id: str,
    subject_id: str | None,
    limit: int,
    cursor: str | None,
    *,
    kind: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ActivityPage:
    """A page of the tenant's log (or one connection's or feed's), newest first; the key holds the tenant, so
    a tenant only ever reads its own entries. A deleted subject's log stays readable until the retention ends."""
    bind_table(settings.connections_table_name)
    pk = subject_log_key(tenant_id, subject_id) if subject_id else tenant_log_key(tenant_id)
    filters = {name: value for name, value in (("type", kind), ("actor", actor)) if value is not None}
    records, next_cursor = page_activity(pk, limit, cursor, since=since, until=until, filters=filters)
    if subject_id and not records and cursor is None:
        # An empty log is another tenant's connection or feed, or none at all, unless it is this tenant's
        # and quiet for longer than the retention (or nothing matched the filters): answer as its other
        # routes do.
        if is_id(subject_id, FEED_ID_PREFIX):
            FEEDS.load_requested(tenant_id, subject_id)
        else:
            CONNECTIONS.load_requested(tenant_id, subject_id)
    return ActivityPage(items=[_view(r) for r in records], next_cursor=next_cursor)
