"""RefreshWorkerFunction: refresh queued connections, reporting partial batch failures."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from oauth_connections.entrypoints.refresh_jobs import handle_refresh_batch


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result: dict[str, Any] = handle_refresh_batch(event, context)
    return result
