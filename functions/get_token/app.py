"""GetTokenFunction: invoked directly by the platform's functions for a valid access token."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from oauth_connections.entrypoints.get_token import handle_get_token


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response: dict[str, Any] = handle_get_token(event, context)
    return response
