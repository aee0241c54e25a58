"""POST /connections."""

from oauth_connections.entrypoints.http.connections import create_connection_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(create_connection_router)
