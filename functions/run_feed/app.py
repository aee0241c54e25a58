"""POST /feeds/{feed_id}/run."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import run_feed_router

lambda_handler = http_handler(run_feed_router)
