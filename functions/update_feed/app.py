"""PATCH /feeds/{feed_id}."""

from oauth_connections.api.http import http_handler
from oauth_connections.api.routes import update_feed_router

lambda_handler = http_handler(update_feed_router)
