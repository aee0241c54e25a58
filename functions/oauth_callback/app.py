"""GET /oauth2/callback."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import oauth_callback_router

lambda_handler = http_handler(oauth_callback_router)
