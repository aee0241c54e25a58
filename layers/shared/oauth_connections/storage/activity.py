"""Activity log items: what happened to a connection or feed, by whom, and when. Append-only: entries are
put once and never updated; DynamoDB's TTL removes them after the retention.

Each entry is written twice, under the table's own keys (no index to pay for on every other item):
- the subject's log:  pk=ACTIVITY#<tenant>#<connection or feed id>  sk=<activity id>
- the tenant's log:   pk=ACTIVITY#<tenant>                          sk=<activity id>
The activity id is time-ordered, so a query in descending key order lists the newest first, and a time
range is a key range.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pynamodb.attributes import TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute

from oauth_connections.core.ids import ACTIVITY_ID_PREFIX, id_bound
from oauth_connections.core.pagination import decode_cursor_of, encode_cursor
from oauth_connections.storage.table import TableModel

ACTIVITY_PREFIX = "ACTIVITY#"


def tenant_log_key(tenant_id: str) -> str:
    return f"{ACTIVITY_PREFIX}{tenant_id}"


def subject_log_key(tenant_id: str, subject_id: str) -> str:
    return f"{ACTIVITY_PREFIX}{tenant_id}#{subject_id}"


class ActivityRecord(TableModel):
    """One entry of an activity log (see the module docstring for its two keys)."""

    tenant_id = UnicodeAttribute()
    activity_id = UnicodeAttribute()
    type = UnicodeAttribute()
    subject_id = UnicodeAttribute()
    actor = UnicodeAttribute(null=True)
    trigger = UnicodeAttribute()
    details = UnicodeAttribute(default="{}")  # JSON of non-secret facts
    occurred_at = UTCDateTimeAttribute()
    expires_at_epoch = TTLAttribute()

    @property
    def detail_fields(self) -> dict[str, Any]:
        loaded = json.loads(self.details)
        return loaded if isinstance(loaded, dict) else {}


def put_activity(record: ActivityRecord) -> str | None:
    """Write the entry to the subject's and the tenant's log; each put refuses to overwrite an entry.
    None when both are written, else the DynamoDB error code of the failed put."""
    from pynamodb.exceptions import PutError

    for pk in (subject_log_key(record.tenant_id, record.subject_id), tenant_log_key(record.tenant_id)):
        record.pk = pk
        try:
            record.save(condition=ActivityRecord.pk.does_not_exist())
        except PutError as error:
            return str(error.cause_response_code or type(error.cause).__name__)
    return None


def page_activity(
    pk: str,
    limit: int,
    cursor: str | None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    filters: dict[str, str] | None = None,
) -> tuple[list[ActivityRecord], str | None]:
    """One page of a log, newest first, after the cursor (the id the previous page ended with), within the
    time range (a key range), keeping only entries whose attributes equal `filters`."""
    low = id_bound(ACTIVITY_ID_PREFIX, since, upper=False) if since else None
    high = id_bound(ACTIVITY_ID_PREFIX, until, upper=True) if until else None
    start = {"pk": {"S": pk}, "sk": {"S": decode_cursor_of(cursor, ACTIVITY_ID_PREFIX)}} if cursor else None
    if low and high and low > high:
        return [], None  # an empty range: DynamoDB refuses a BETWEEN whose bounds are reversed
    condition: Any = None
    if low and high:
        condition = ActivityRecord.sk.between(low, high)
    elif low:
        condition = ActivityRecord.sk >= low
    elif high:
        condition = ActivityRecord.sk <= high
    filter_condition: Any = None
    for name, value in (filters or {}).items():
        clause = getattr(ActivityRecord, name) == value
        filter_condition = clause if filter_condition is None else filter_condition & clause
    result = ActivityRecord.query(
        pk,
        condition,
        filter_condition=filter_condition,
        scan_index_forward=False,
        last_evaluated_key=start,
        limit=limit + 1,
        page_size=limit + 1,
    )
    items = list(result)
    more = len(items) > limit
    return items[:limit], encode_cursor(items[limit - 1].sk) if more else None
