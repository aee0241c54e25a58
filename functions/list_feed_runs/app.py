"""GET /feeds/{feed_id}/runs."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import list_feed_runs_router

lambda_handler = http_handler(list_feed_runs_router)
