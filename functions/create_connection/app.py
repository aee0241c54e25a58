"""POST /connections."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import create_connection_router

lambda_handler = http_handler(create_connection_router)
