"""DELETE /connections/{connection_id}."""

from oauth_connections.entrypoints.http.connections import delete_connection_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(delete_connection_router)
