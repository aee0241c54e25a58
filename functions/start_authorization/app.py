"""POST /connections/{connection_id}/authorize."""

from oauth_connections.entrypoints.http.connections import start_authorization_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(start_authorization_router)
