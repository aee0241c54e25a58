"""GET /connections."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import list_connections_router

lambda_handler = http_handler(list_connections_router)
