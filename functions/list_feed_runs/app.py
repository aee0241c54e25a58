"""GET /feeds/{feed_id}/runs."""

from oauth_connections.entrypoints.http.feeds import list_feed_runs_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(list_feed_runs_router)
