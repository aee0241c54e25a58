"""Status events on EventBridge, for the platform to learn about connections before campaigns fail.

An event reports a change that is already stored, so publishing never undoes or fails it: a failed
PutEvents (an error, or the entry refused) is tried again a few times within the invocation's time,
then logged and counted (EventsNotPublished, alarmed in template.yaml) and the caller goes on.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from oauth_connections.core import aws, budget
from oauth_connections.core.observability import logger

SOURCE = "oauth-connections"
PUBLISH_ATTEMPTS = 3
RETRY_PAUSE_SECONDS = 0.2
# Publishing stops retrying after this long: each PutEvents already makes the SDK's bounded attempts.
PUBLISH_MAX_SECONDS = 2.0
NOT_PUBLISHED_METRIC = "EventsNotPublished"


def publish(bus_name: str, detail_type: str, *, tenant_id: str, connection_id: str, **fields: Any) -> None:
    """Publish one event; a failure to publish is retried, then logged and counted, never raised."""
    detail = {
        "tenant_id": tenant_id,
        "connection_id": connection_id,
        "time": datetime.now(UTC).isoformat(),
        **fields,
    }
    entry = {"Source": SOURCE, "DetailType": detail_type, "Detail": json.dumps(detail), "EventBusName": bus_name}
    context = {"detail_type": detail_type, "connection_id": connection_id}
    started = time.monotonic()
    problem = _put(entry)
    for attempt in range(1, PUBLISH_ATTEMPTS):
        if problem is None:
            return
        pause = RETRY_PAUSE_SECONDS * attempt
        spent = time.monotonic() - started
        if spent + pause > PUBLISH_MAX_SECONDS or budget.bounded(pause, reserve=aws.ANSWER_RESERVE_SECONDS) < pause:
            break  # an unreachable EventBridge must not hold up the caller any longer
        time.sleep(pause)
        problem = _put(entry)
    if problem is None:
        return
    logger.error("event not published", extra=context | {"problem": problem})
    with single_metric(name=NOT_PUBLISHED_METRIC, unit=MetricUnit.Count, value=1) as metric:
        metric.add_metadata(key="detail_type", value=detail_type)


def _put(entry: dict[str, str]) -> str | None:
    """One PutEvents call; None if the event was accepted, else what went wrong (no event content)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        result = aws.client("events").put_events(Entries=[entry])
    except ClientError as error:
        return str(error.response.get("Error", {}).get("Code") or type(error).__name__)
    except BotoCoreError as error:
        return type(error).__name__
    if result.get("FailedEntryCount"):
        refused = (result.get("Entries") or [{}])[0]
        return str(refused.get("ErrorCode") or "entry refused")
    return None
