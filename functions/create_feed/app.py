"""POST /feeds."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import create_feed_router

lambda_handler = http_handler(create_feed_router)
