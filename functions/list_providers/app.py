"""GET /providers."""

from oauth_connections.entrypoints.http.providers import list_providers_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(list_providers_router)
