"""Routes of the feeds API, one router per function."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from oauth_connections.core.config import get_settings
from oauth_connections.entrypoints.http import access
from oauth_connections.entrypoints.http.collection import ApiCollection, collection_routers
from oauth_connections.entrypoints.http.resolver import (
    current_caller,
    documented,
    json_response,
)
from oauth_connections.feeds import dispatch, service
from oauth_connections.feeds.models import FeedRunList, FeedRunQueued

FeedId = Annotated[str, Path(pattern=r"^feed_[0-9a-hjkmnp-tv-z]{26}$", description="Feed id (feed_...)")]


FEED_ROUTERS = collection_routers(
    ApiCollection("feed", "feeds", FeedId, service, "product feeds"),
    create="Register a product feed, public or protected by one of the tenant's connections",
    delete="Delete a feed (its stored objects expire by the bucket's lifecycle)",
)
list_feeds_router, get_feed_router, create_feed_router, update_feed_router, delete_feed_router = FEED_ROUTERS


run_feed_router = Router()


@run_feed_router.post(
    "/feeds/<feed_id>/run",
    summary="Fetch the feed now",
    **documented(access.MANAGE, 202, "Queued", FeedRunQueued, 401, 404, 422),
)
def run_feed(feed_id: FeedId) -> Response[FeedRunQueued]:
    dispatch.request_feed_run(get_settings(), current_caller(run_feed_router), feed_id)
    return json_response(202, FeedRunQueued())


list_feed_runs_router = Router()


@list_feed_runs_router.get(
    "/feeds/<feed_id>/runs",
    summary="The latest runs of a feed, newest first",
    **documented(access.READ, 200, "Runs", FeedRunList, 401, 404, 422),
)
def list_feed_runs(
    feed_id: FeedId, limit: Annotated[int, Query(ge=1, le=100, description="How many runs")] = 20
) -> Response[FeedRunList]:
    return json_response(200, service.list_runs(get_settings(), current_caller(list_feed_runs_router), feed_id, limit))
