"""Routes of the feeds API, one router per function."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query

from oauth_connections.core.config import get_settings
from oauth_connections.entrypoints.http import access
from oauth_connections.entrypoints.http.access import FORBIDDEN
from oauth_connections.entrypoints.http.resolver import (
    current_caller,
    documented_responses,
    json_response,
    parse_if_match,
)
from oauth_connections.feeds import dispatch, service
from oauth_connections.feeds.models import FeedCreate, FeedOut, FeedPage, FeedRunList, FeedRunQueued, FeedUpdate

FeedId = Annotated[str, Path(pattern=r"^feed_[0-9a-hjkmnp-tv-z]{26}$", description="Feed id (feed_...)")]


list_feeds_router = Router()


@list_feeds_router.get(
    "/feeds",
    summary="List the tenant's product feeds",
    responses=documented_responses(200, "A page of feeds", FeedPage, 400, 401, 422) | FORBIDDEN,
    security=access.READ,
)
def list_feeds(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 20,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> Response[FeedPage]:
    caller = current_caller(list_feeds_router)
    return json_response(200, service.list_feeds(get_settings(), caller, limit, cursor))


get_feed_router = Router()


@get_feed_router.get(
    "/feeds/<feed_id>",
    summary="Get one feed",
    responses=documented_responses(200, "The feed", FeedOut, 401, 404, 422) | FORBIDDEN,
    security=access.READ,
)
def get_feed(feed_id: FeedId) -> Response[FeedOut]:
    view = service.get_feed(get_settings(), current_caller(get_feed_router), feed_id)
    return json_response(200, view, etag=view.version)


create_feed_router = Router()


@create_feed_router.post(
    "/feeds",
    summary="Register a product feed, public or protected by one of the tenant's connections",
    responses=documented_responses(201, "Created", FeedOut, 400, 401, 413, 415, 422) | FORBIDDEN,
    security=access.MANAGE,
)
def create_feed(request: Annotated[FeedCreate, Body()]) -> Response[FeedOut]:
    view = service.create_feed(get_settings(), current_caller(create_feed_router), request)
    return json_response(201, view, etag=view.version)


update_feed_router = Router()


@update_feed_router.patch(
    "/feeds/<feed_id>",
    summary="Change some settings of a feed",
    responses=documented_responses(200, "Updated", FeedOut, 400, 401, 404, 409, 412, 413, 415, 422) | FORBIDDEN,
    security=access.MANAGE,
)
def update_feed(
    feed_id: FeedId,
    request: Annotated[FeedUpdate, Body()],
    if_match: Annotated[str | None, Header(alias="if-match", max_length=64)] = None,
) -> Response[FeedOut]:
    caller = current_caller(update_feed_router)
    view = service.update_feed(get_settings(), caller, feed_id, request, parse_if_match(if_match))
    return json_response(200, view, etag=view.version)


delete_feed_router = Router()


@delete_feed_router.delete(
    "/feeds/<feed_id>",
    summary="Delete a feed (its stored objects expire by the bucket's lifecycle)",
    responses=documented_responses(204, "Deleted", None, 401, 404, 409, 422) | FORBIDDEN,
    security=access.MANAGE,
)
def delete_feed(feed_id: FeedId) -> Response[None]:
    service.delete_feed(get_settings(), current_caller(delete_feed_router), feed_id)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


run_feed_router = Router()


@run_feed_router.post(
    "/feeds/<feed_id>/run",
    summary="Fetch the feed now",
    responses=documented_responses(202, "Queued", FeedRunQueued, 401, 404, 422) | FORBIDDEN,
    security=access.MANAGE,
)
def run_feed(feed_id: FeedId) -> Response[FeedRunQueued]:
    dispatch.request_feed_run(get_settings(), current_caller(run_feed_router), feed_id)
    return json_response(202, FeedRunQueued())


list_feed_runs_router = Router()


@list_feed_runs_router.get(
    "/feeds/<feed_id>/runs",
    summary="The latest runs of a feed, newest first",
    responses=documented_responses(200, "Runs", FeedRunList, 401, 404, 422) | FORBIDDEN,
    security=access.READ,
)
def list_feed_runs(
    feed_id: FeedId, limit: Annotated[int, Query(ge=1, le=100, description="How many runs")] = 20
) -> Response[FeedRunList]:
    return json_response(200, service.list_runs(get_settings(), current_caller(list_feed_runs_router), feed_id, limit))
