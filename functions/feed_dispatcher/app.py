"""FeedDispatcherFunction: every minute, queue the feeds whose next run has come."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from oauth_connections.entrypoints.feed_jobs import handle_dispatch


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result: dict[str, Any] = handle_dispatch(event, context)
    return result
