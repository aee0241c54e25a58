"""GET /connections/{connection_id}/activity."""

from oauth_connections.entrypoints.http.activity import list_connection_activity_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(list_connection_activity_router)
