"""PATCH /connections/{connection_id}."""

from oauth_connections.entrypoints.http.connections import update_connection_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(update_connection_router)
