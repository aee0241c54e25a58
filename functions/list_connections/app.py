"""GET /connections."""

from oauth_connections.entrypoints.http.connections import list_connections_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(list_connections_router)
