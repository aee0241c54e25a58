"""Routes of the activity log: read only. No route changes or deletes an entry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from oauth_connections.connections import activity
from oauth_connections.connections.activity import ActivityPage
from oauth_connections.core.config import get_settings
from oauth_connections.entrypoints.http import access
from oauth_connections.entrypoints.http.connections import ConnectionId
from oauth_connections.entrypoints.http.feeds import FeedId
from oauth_connections.entrypoints.http.resolver import PageCursor, PageLimit, current_caller, documented, json_response

ActivityType = Annotated[
    str | None, Query(alias="type", pattern=r"^[a-z_]{1,32}\.[a-z_]{1,32}$", description="connection.updated, ...")
]
ActivityUser = Annotated[str | None, Query(max_length=256, description="Only entries by this user")]
Since = Annotated[datetime | None, Query(description="Only entries at or after this time (ISO 8601)")]
Until = Annotated[datetime | None, Query(description="Only entries at or before this time (ISO 8601)")]

list_connection_activity_router = Router()


@list_connection_activity_router.get(
    "/connections/<connection_id>/activity",
    summary="What happened to a connection, newest first",
    description="Entries stay after the connection is deleted, until the retention ends.",
    **documented(access.READ, 200, "A page of the connection's activity", ActivityPage, 400, 401, 404, 422),
)
def list_connection_activity(
    connection_id: ConnectionId,
    limit: PageLimit = 20,
    cursor: PageCursor = None,
    activity_type: ActivityType = None,
    user: ActivityUser = None,
    since: Since = None,
    until: Until = None,
) -> Response[ActivityPage]:
    return _page(list_connection_activity_router, connection_id, limit, cursor, activity_type, user, since, until)


list_feed_activity_router = Router()


@list_feed_activity_router.get(
    "/feeds/<feed_id>/activity",
    summary="What happened to a feed, newest first",
    description="Its changes and the outcome of its runs (a routine scheduled run is not logged one by one). "
    "Entries stay after the feed is deleted, until the retention ends.",
    **documented(access.READ, 200, "A page of the feed's activity", ActivityPage, 400, 401, 404, 422),
)
def list_feed_activity(
    feed_id: FeedId,
    limit: PageLimit = 20,
    cursor: PageCursor = None,
    activity_type: ActivityType = None,
    user: ActivityUser = None,
    since: Since = None,
    until: Until = None,
) -> Response[ActivityPage]:
    return _page(list_feed_activity_router, feed_id, limit, cursor, activity_type, user, since, until)


list_activity_router = Router()


@list_activity_router.get(
    "/activity",
    summary="What happened to the tenant's connections and feeds, newest first",
    **documented(access.READ, 200, "A page of the tenant's activity", ActivityPage, 400, 401, 422),
)
def list_activity(
    limit: PageLimit = 20,
    cursor: PageCursor = None,
    activity_type: ActivityType = None,
    user: ActivityUser = None,
    since: Since = None,
    until: Until = None,
) -> Response[ActivityPage]:
    return _page(list_activity_router, None, limit, cursor, activity_type, user, since, until)


def _page(
    router: Router,
    subject_id: str | None,
    limit: int,
    cursor: str | None,
    activity_type: str | None,
    user: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Response[ActivityPage]:
    """One page of a log: a connection's or a feed's (`subject_id`), or the tenant's (None); each route
    declares the same filters in its own signature, as the resolver validates and documents them from it."""
    page = activity.list_activity(
        get_settings(),
        current_caller(router).tenant_id,
        subject_id,
        limit,
        cursor,
        kind=activity_type,
        actor=user,
        since=since,
        until=until,
    )
    return json_response(200, page)
