"""RefreshSchedulerFunction: on a schedule, queue the connections due for a refresh."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from oauth_connections.entrypoints.refresh_jobs import handle_sweep


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result: dict[str, Any] = handle_sweep(event, context)
    return result
