"""Boundaries of the scheduled refresh: the sweep on a schedule, the worker on the queue."""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
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


def _failed(record: SQSRecord, future: Future[str]) -> bool:
    error = future.exception()
    if error is None:
        return False
    if isinstance(error, OutOfTimeError):
        logger.info("scheduled refresh deferred", extra={"message_id": record.message_id, "reason": str(error)})
    else:
        logger.error(
            "scheduled refresh failed",
            extra={"message_id": record.message_id},
            exc_info=(type(error), error, error.__traceback__),
        )
    return True


def refresh_batch(records: list[SQSRecord], concurrency: int) -> list[str]:
    """Refresh the batch's messages, up to `concurrency` at once; returns the ids of the failed ones.

    Each refresh mostly waits for its provider, so threads overlap those waits. A message starts only
    with the time to finish (checked when its turn comes), and each runs in a copy of this context,
    where the invocation's deadline bounds its lease and its calls. What fails, or finds no time, is
    reported back by message id for SQS to deliver again; the others are done.
    """
    if not records:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(records)))) as pool:
        futures = [(record, pool.submit(copy_context().run, _process_record, record)) for record in records]
    return [record.message_id for record, future in futures if _failed(record, future)]


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handle_refresh_batch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = [SQSRecord(raw) for raw in event.get("Records") or []]
    with budget.invocation(context):
        failed = refresh_batch(records, get_settings().refresh_batch_concurrency)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
