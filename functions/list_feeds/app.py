"""GET /feeds."""

from oauth_connections.entrypoints.http.feeds import list_feeds_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(list_feeds_router)
