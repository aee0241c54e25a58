"""GET /oauth2/callback."""

from oauth_connections.entrypoints.http.browser import oauth_callback_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(oauth_callback_router)
