"""POST /connections/{connection_id}/authorize."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import start_authorization_router

lambda_handler = http_handler(start_authorization_router)
