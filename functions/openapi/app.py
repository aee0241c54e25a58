"""GET /openapi.json."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import openapi_router

lambda_handler = http_handler(openapi_router)
