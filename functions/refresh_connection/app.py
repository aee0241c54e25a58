"""POST /connections/{connection_id}/refresh."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import refresh_connection_router

lambda_handler = http_handler(refresh_connection_router)
