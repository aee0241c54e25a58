"""Routes of the feeds API, one router per function."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query

from oauth_connections.core.config import get_settings
from oauth_connections.entrypoints.http import access
from oauth_connections.entrypoints.http.resolver import (
    IfMatch,
    PageCursor,
    PageLimit,
    current_caller,
    documented,
    json_response,
    no_content,
    parse_if_match,
    versioned_response,
)
from oauth_connections.feeds import dispatch, service
from oauth_connections.feeds.models import FeedCreate, FeedOut, FeedPage, FeedRunList, FeedRunQueued, FeedUpdate

FeedId = Annotated[str, Path(pattern=r"^feed_[0-9a-hjkmnp-tv-z]{26}$", description="Feed id (feed_...)")]


list_feeds_router = Router()


@list_feeds_router.get(
    "/feeds",
    summary="List the tenant's product feeds",
    **documented(access.READ, 200, "A page of feeds", FeedPage, 400, 401, 422),
)
def list_feeds(limit: PageLimit = 20, cursor: PageCursor = None) -> Response[FeedPage]:
    caller = current_caller(list_feeds_router)
    return json_response(200, service.list_feeds(get_settings(), caller, limit, cursor))


get_feed_router = Router()


@get_feed_router.get(
    "/feeds/<feed_id>", summary="Get one feed", **documented(access.READ, 200, "The feed", FeedOut, 401, 404, 422)
)
def get_feed(feed_id: FeedId) -> Response[FeedOut]:
    view = service.get_feed(get_settings(), current_caller(get_feed_router), feed_id)
    return versioned_response(200, view)


create_feed_router = Router()


@create_feed_router.post(
    "/feeds",
    summary="Register a product feed, public or protected by one of the tenant's connections",
    **documented(access.MANAGE, 201, "Created", FeedOut, 400, 401, 413, 415, 422),
)
def create_feed(request: Annotated[FeedCreate, Body()]) -> Response[FeedOut]:
    view = service.create_feed(get_settings(), current_caller(create_feed_router), request)
    return versioned_response(201, view)


update_feed_router = Router()


@update_feed_router.patch(
    "/feeds/<feed_id>",
    summary="Change some settings of a feed",
    **documented(access.MANAGE, 200, "Updated", FeedOut, 400, 401, 404, 409, 412, 413, 415, 422),
)
def update_feed(
    feed_id: FeedId,
    request: Annotated[FeedUpdate, Body()],
    if_match: IfMatch = None,
) -> Response[FeedOut]:
    caller = current_caller(update_feed_router)
    view = service.update_feed(get_settings(), caller, feed_id, request, parse_if_match(if_match))
    return versioned_response(200, view)


delete_feed_router = Router()


@delete_feed_router.delete(
    "/feeds/<feed_id>",
    summary="Delete a feed (its stored objects expire by the bucket's lifecycle)",
    **documented(access.MANAGE, 204, "Deleted", None, 401, 404, 409, 422),
)
def delete_feed(feed_id: FeedId) -> Response[None]:
    service.delete_feed(get_settings(), current_caller(delete_feed_router), feed_id)
    return no_content()


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
