"""FeedFetchFunction: fetch queued feeds into S3, reporting partial batch failures."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from oauth_connections.entrypoints.feed_jobs import handle_fetch_batch


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result: dict[str, Any] = handle_fetch_batch(event, context)
    return result
