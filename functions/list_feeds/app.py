"""GET /feeds."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import list_feeds_router

lambda_handler = http_handler(list_feeds_router)
