"""POST /feeds/{feed_id}/run."""

from oauth_connections.entrypoints.http.feeds import run_feed_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(run_feed_router)
