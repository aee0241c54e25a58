"""CallApiFunction: invoked directly by the platform's functions, in any language, for one authorized API call."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from oauth_connections.entrypoints.call_api import handle_call_api


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response: dict[str, Any] = handle_call_api(event, context)
    return response
