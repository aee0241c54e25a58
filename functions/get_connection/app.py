"""GET /connections/{connection_id}."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import get_connection_router

lambda_handler = http_handler(get_connection_router)
