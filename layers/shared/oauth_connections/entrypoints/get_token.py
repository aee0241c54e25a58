"""The GetTokenFunction boundary: parse, retrieve, answer; every failure becomes an error code."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from oauth_connections.connections.refresh import TokenError
from oauth_connections.connections.retrieval import error_response, get_token, parse_request
from oauth_connections.core import aws, budget, snapstart
from oauth_connections.core.config import get_settings
from oauth_connections.core.observability import logger, metrics, tracer

snapstart.register_restore_hooks()


@logger.inject_lambda_context(correlation_id_path="correlation_id", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handle_get_token(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with budget.invocation(context):
        return _answer(event)


def _answer(event: dict[str, Any]) -> dict[str, Any]:
    try:
        request = parse_request(event)
        logger.append_keys(tenant_id=request.tenant_id, connection_id=request.connection_id)
        response = get_token(get_settings(), request)
    except TokenError as error:
        logger.info("token not given", extra={"error_code": error.code})
        metrics.add_metric(name="TokenRetrievalFailed", unit=MetricUnit.Count, value=1)
        return error_response(error)
    except Exception as error:  # noqa: BLE001 - the boundary: logged with its trace, answered with a code
        metrics.add_metric(name="TokenRetrievalFailed", unit=MetricUnit.Count, value=1)
        unavailable = aws.unavailable_error(error)
        if unavailable is not None:
            logger.warning("token retrieval failed: AWS unavailable", exc_info=True)
            metrics.add_metric(name="AwsUnavailable", unit=MetricUnit.Count, value=1)
            return error_response(
                TokenError(unavailable.code, unavailable.message, retry_after=unavailable.retry_after)
            )
        logger.exception("token retrieval failed")
        return error_response(TokenError("internal_error", "the token service failed; try again"))
    metrics.add_metric(name="TokenRetrieved", unit=MetricUnit.Count, value=1)
    return response
