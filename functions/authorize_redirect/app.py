"""GET /oauth2/authorize."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import authorize_redirect_router

lambda_handler = http_handler(authorize_redirect_router)
