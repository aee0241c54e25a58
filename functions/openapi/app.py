"""GET /openapi.json."""

from oauth_connections.entrypoints.http.openapi import openapi_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(openapi_router)
