"""GET /feeds/{feed_id}."""

from oauth_connections.entrypoints.http.feeds import get_feed_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(get_feed_router)
