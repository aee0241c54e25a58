"""GET /oauth2/authorize."""

from oauth_connections.entrypoints.http.browser import authorize_redirect_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(authorize_redirect_router)
