"""POST /connections/{connection_id}/test."""

from oauth_connections.entrypoints.http.connections import test_connection_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(test_connection_router)
