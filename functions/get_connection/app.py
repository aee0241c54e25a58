"""GET /connections/{connection_id}."""

from oauth_connections.entrypoints.http.connections import get_connection_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(get_connection_router)
