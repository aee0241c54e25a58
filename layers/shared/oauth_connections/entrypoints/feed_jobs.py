"""Boundaries of the scheduled feed fetch: the dispatcher on a schedule, the fetcher on the queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from oauth_connections.core import budget
from oauth_connections.core.config import get_settings
from oauth_connections.core.observability import logger, metrics, tracer
from oauth_connections.feeds import dispatch, fetch


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handle_dispatch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return {"queued": dispatch.dispatch_due_feeds(get_settings(), fired_at(event))}


def fired_at(event: dict[str, Any]) -> datetime | None:
    """The scheduled event's `time` (when the schedule fired), or None if it carries no readable one."""
    stamp = event.get("time") if isinstance(event, dict) else None
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _fetch_record(record: SQSRecord) -> str:
    body = json.loads(record.body)
    return fetch.record_feed_run(
        get_settings(), str(body["tenant_id"]), str(body["feed_id"]), str(body.get("trigger", "schedule"))
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handle_fetch_batch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with budget.invocation(context):  # the deadline ends with the invocation, never leaks into the next
        processor = BatchProcessor(event_type=EventType.SQS)
        return dict(
            process_partial_response(event=event, record_handler=_fetch_record, processor=processor, context=context)
        )
