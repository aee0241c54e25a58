"""The CallApiFunction boundary: parse, call, answer; every failure becomes an error code, every call one log line.

The log line (with the keys connections/api_calls.py appends: method, api_host) and the metrics say which
connection, method and host, the status, attempts and duration; never a header value, a body, a query or
a token.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

import oauth_connections_client as client
from oauth_connections.connections.api_calls import call_api, parse_request
from oauth_connections.connections.refresh import TokenError
from oauth_connections.connections.retrieval import error_response
from oauth_connections.core import aws, budget, snapstart
from oauth_connections.core.config import get_settings
from oauth_connections.core.observability import logger, metrics, tracer
from oauth_connections_client import calls

snapstart.register_restore_hooks()


@logger.inject_lambda_context(correlation_id_path="correlation_id", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handle_call_api(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with budget.invocation(context):
        return _answer(event)


def _answer(event: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        request = parse_request(event)
        logger.append_keys(tenant_id=request.tenant_id, connection_id=request.connection_id)
        answer = call_api(get_settings(), request)
    except TokenError as error:
        return _failed(error_response(error), started)
    except (client.TokenServiceError, client.UnsafeUrlError) as error:
        return _failed(calls.error_body(error), started)
    except Exception as error:  # noqa: BLE001 - the boundary: logged with its trace, answered with a code
        unavailable = aws.unavailable_error(error)
        if unavailable is not None:
            logger.warning("api call failed: AWS unavailable", exc_info=True)
            metrics.add_metric(name="AwsUnavailable", unit=MetricUnit.Count, value=1)
            failure = TokenError(unavailable.code, unavailable.message, retry_after=unavailable.retry_after)
        else:
            logger.exception("api call failed")
            failure = TokenError("internal_error", "the call service failed; try again")
        return _failed(error_response(failure), started)
    logger.info(
        "api call",
        extra={
            "status": answer["status"],
            "attempts": answer["attempts"],
            "refreshed": answer["refreshed"],
            "duration_ms": _elapsed_ms(started),
        },
    )
    metrics.add_metric(name="ApiCallAnswered", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ApiCallDuration", unit=MetricUnit.Milliseconds, value=_elapsed_ms(started))
    return answer


def _failed(answer: dict[str, Any], started: float) -> dict[str, Any]:
    code = answer["error"]["code"]
    logger.info("api call not answered", extra={"error_code": code, "duration_ms": _elapsed_ms(started)})
    metrics.add_metric(
        name="ApiCallRateLimited" if code == "rate_limited" else "ApiCallFailed", unit=MetricUnit.Count, value=1
    )
    return answer


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
