"""PATCH /feeds/{feed_id}."""

from oauth_connections.entrypoints.http.feeds import update_feed_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(update_feed_router)
