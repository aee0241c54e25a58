"""Boundaries of the scheduled refresh: the sweep on a schedule, the worker on the queue."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from oauth_connections.connections import refresh, scheduled_refresh
from oauth_connections.core import budget
from oauth_connections.core.config import get_settings
from oauth_connections.core.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handle_sweep(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with budget.invocation(context):
        result = scheduled_refresh.sweep(get_settings())
    return {"enqueued": result.enqueued, "shards": result.shards}


class OutOfTimeError(Exception):
    """Too little of the invocation is left to refresh this message's connection; SQS delivers it again."""


def _process_record(record: SQSRecord) -> str:
    settings = get_settings()
    left = budget.remaining_seconds()
    if left is not None and left < refresh.holder_seconds_needed(settings):
        metrics.add_metric(name="RefreshMessagesDeferred", unit=MetricUnit.Count, value=1)
        raise OutOfTimeError(f"{left:.1f} s left in the invocation")
    outcome = scheduled_refresh.process(settings, json.loads(record.body))
    metrics.add_metric(name="RefreshMessagesProcessed", unit=MetricUnit.Count, value=1)
    logger.info("scheduled refresh", extra={"outcome": outcome, "message_id": record.message_id})
    return outcome


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handle_refresh_batch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Messages left when time runs short are reported as failures (not processed), so SQS redelivers them.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    with budget.invocation(context):
        response = process_partial_response(
            event=event, record_handler=_process_record, processor=processor, context=context
        )
    return dict(response)
