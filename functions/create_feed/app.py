"""POST /feeds."""

from oauth_connections.entrypoints.http.feeds import create_feed_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(create_feed_router)
