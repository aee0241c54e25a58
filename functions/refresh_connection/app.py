"""POST /connections/{connection_id}/refresh."""

from oauth_connections.entrypoints.http.connections import refresh_connection_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(refresh_connection_router)
