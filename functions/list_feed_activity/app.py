"""GET /feeds/{feed_id}/activity."""

from oauth_connections.entrypoints.http.activity import list_feed_activity_router
from oauth_connections.entrypoints.http.resolver import http_handler

lambda_handler = http_handler(list_feed_activity_router)
