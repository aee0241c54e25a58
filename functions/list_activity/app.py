"""GET /activity."""

from oauth_connections.entrypoints.http.activity import list_activity_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(list_activity_router)
