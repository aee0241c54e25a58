"""Route definitions of the REST API, one router per function (each function serves its own routes;
the OpenAPI function includes them all to describe the whole API)."""

from __future__ import annotations

import html
import json
from typing import Annotated, Any, cast

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.shared.cookies import Cookie, SameSite
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from oauth_connections import connections, feeds, flows
from oauth_connections.api import access
from oauth_connections.api.access import FORBIDDEN
from oauth_connections.api.http import current_caller, documented_responses
from oauth_connections.config import get_settings
from oauth_connections.errors import InvalidRequestError
from oauth_connections.models import (
    AuthorizeRequest,
    AuthorizeResponse,
    ConnectionCreate,
    ConnectionOut,
    ConnectionPage,
    ConnectionUpdate,
    FeedCreate,
    FeedOut,
    FeedPage,
    FeedRunList,
    FeedRunQueued,
    FeedUpdate,
)

ConnectionId = Annotated[str, Path(pattern=r"^con_[0-9a-hjkmnp-tv-z]{26}$", description="Connection id (con_...)")]
AUTH_ERRORS = (401,)


def _json(status: int, model: Any, *, etag: int | None = None) -> Response[Any]:
    headers = {"Cache-Control": "no-store"}
    if etag is not None:
        headers["ETag"] = f'"{etag}"'
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=model,
        headers=headers,
    )


def _parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    # isdigit alone admits non-ASCII digits ("²") that int() refuses.
    if not (tag.isascii() and tag.isdigit()) or len(tag) > 18:
        raise InvalidRequestError("If-Match must be an ETag returned by this API", code="invalid_if_match")
    return int(tag)


list_connections_router = Router()


@list_connections_router.get(
    "/connections",
    summary="List the tenant's connections",
    responses=documented_responses(200, "A page of connections", ConnectionPage, 400, 401, 422) | FORBIDDEN,
    security=access.READ,
)
def list_connections(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 20,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> Response[ConnectionPage]:
    caller = current_caller(list_connections_router)
    page = connections.list_connections(get_settings(), caller, limit, cursor)
    return _json(200, page)


get_connection_router = Router()


@get_connection_router.get(
    "/connections/<connection_id>",
    summary="Get one connection",
    responses=documented_responses(200, "The connection", ConnectionOut, 401, 404, 422) | FORBIDDEN,
    security=access.READ,
)
def get_connection(connection_id: ConnectionId) -> Response[ConnectionOut]:
    caller = current_caller(get_connection_router)
    view = connections.get_connection(get_settings(), caller, connection_id)
    return _json(200, view, etag=view.version)


create_connection_router = Router()


@create_connection_router.post(
    "/connections",
    summary="Register a provider's OAuth2 app as a connection",
    responses=documented_responses(201, "Created", ConnectionOut, 400, 401, 409, 413, 415, 422) | FORBIDDEN,
    security=access.MANAGE,
)
def create_connection(request: Annotated[ConnectionCreate, Body()]) -> Response[ConnectionOut]:
    caller = current_caller(create_connection_router)
    view = connections.create_connection(get_settings(), caller, request)
    return _json(201, view, etag=view.version)


update_connection_router = Router()


@update_connection_router.patch(
    "/connections/<connection_id>",
    summary="Change some settings of a connection",
    description="Send `If-Match` with the ETag you read to have a stale update refused with 412. Changing "
    "client_id, issuer, an endpoint, token_auth_method or grant_type ends the grant (the connection is pending "
    "again); moving the token or revocation endpoint to another origin needs client_secret in the same request "
    "(422 client_secret_required).",
    responses=documented_responses(200, "Updated", ConnectionOut, 400, 401, 404, 409, 412, 413, 415, 422) | FORBIDDEN,
    security=access.MANAGE,
)
def update_connection(
    connection_id: ConnectionId,
    request: Annotated[ConnectionUpdate, Body()],
    if_match: Annotated[str | None, Header(alias="if-match", max_length=64)] = None,
) -> Response[ConnectionOut]:
    caller = current_caller(update_connection_router)
    view = connections.update_connection(get_settings(), caller, connection_id, request, _parse_if_match(if_match))
    return _json(200, view, etag=view.version)


delete_connection_router = Router()


@delete_connection_router.delete(
    "/connections/<connection_id>",
    summary="Delete a connection with its secret and tokens",
    responses=documented_responses(204, "Deleted", None, 401, 404, 409, 422) | FORBIDDEN,
    security=access.MANAGE,
)
def delete_connection(connection_id: ConnectionId) -> Response[None]:
    caller = current_caller(delete_connection_router)
    connections.delete_connection(get_settings(), caller, connection_id)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


openapi_router = Router()


@openapi_router.get(
    "/openapi.json",
    summary="This API's OpenAPI document",
    responses=documented_responses(200, "The document", None, 401) | FORBIDDEN,
    security=access.READ,
)
def openapi_document() -> Response[dict[str, Any]]:
    from oauth_connections.api.http import build_resolver

    document = build_resolver(API_ROUTERS).get_openapi_json_schema(
        title="OAuth2 connection service", version="1.0.0", security_schemes=access.SECURITY_SCHEMES
    )
    return _json(200, access.with_deployed_scopes(json.loads(document), get_settings()))


refresh_connection_router = Router()


@refresh_connection_router.post(
    "/connections/<connection_id>/refresh",
    summary="Refresh the connection's tokens now",
    description="Goes through the same single-flight refresh as token retrieval; 503 carries Retry-After.",
    responses=documented_responses(200, "The refreshed connection", ConnectionOut, 401, 404, 409, 422, 503) | FORBIDDEN,
    security=access.MANAGE,
)
def refresh_connection(connection_id: ConnectionId) -> Response[ConnectionOut]:
    caller = current_caller(refresh_connection_router)
    view = connections.refresh_now(get_settings(), caller, connection_id)
    return _json(200, view, etag=view.version)


# ------------------------------------------------------------------ authorization flow

start_authorization_router = Router()


@start_authorization_router.post(
    "/connections/<connection_id>/authorize",
    summary="Start connecting: get the URL to send the browser to",
    description="The browser must navigate to `redirect_url` (a tab or a popup); it is single-use and short-lived.",
    responses=documented_responses(
        200,
        "Where to send the browser (or, for client_credentials, the new status)",
        AuthorizeResponse,
        400,
        401,
        404,
        413,
        415,
        422,
        503,
    )
    | FORBIDDEN,
    security=access.MANAGE,
)
def start_authorization(
    connection_id: ConnectionId, request: Annotated[AuthorizeRequest | None, Body()] = None
) -> Response[AuthorizeResponse]:
    caller = current_caller(start_authorization_router)
    return_url = request.return_url if request else None
    start = flows.start_authorization(get_settings(), caller, connection_id, return_url)
    if isinstance(start, flows.DirectConnection):
        return _json(200, AuthorizeResponse(status=start.status, token_expires_at=start.token_expires_at))
    return _json(200, AuthorizeResponse(redirect_url=start.redirect_url, expires_at=start.expires_at))


authorize_redirect_router = Router()

_BROWSER_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _redirect(location: str, cookies: list[Cookie] | None = None) -> Response[Any]:
    return Response(status_code=302, headers={"Location": location, **_BROWSER_HEADERS}, cookies=cookies or [])


def _error_page(error: flows.FlowError) -> Response[Any]:
    if error.return_url:
        return _redirect(
            flows.with_query(error.return_url, status="error", error=error.code, error_description=error.message)
        )
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Connection failed</title>"
        "<body style='font-family:sans-serif;max-width:40em;margin:4em auto'>"
        f"<h1>Connection failed</h1><p>{html.escape(error.message)}</p>"
        f"<p><small>Error code: {html.escape(error.code)}</small></p>"
        "<p>Close this window and start again from the app.</p></body></html>"
    )
    return Response(
        status_code=400,
        content_type="text/html; charset=utf-8",
        body=page,
        headers={**_BROWSER_HEADERS, "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


@authorize_redirect_router.get("/oauth2/authorize", include_in_schema=False)
def authorize_redirect() -> Response[Any]:
    settings = get_settings()
    params = authorize_redirect_router.current_event.query_string_parameters or {}
    try:
        target = flows.begin_redirect(settings, params.get("flow"))
    except flows.FlowError as error:
        return _error_page(error)
    cookie = Cookie(
        name=target.cookie_name,
        value=target.cookie_value,
        path="/",
        secure=settings.cookie_secure,
        http_only=True,
        same_site=SameSite.LAX_MODE,
        max_age=target.max_age,
    )
    return _redirect(target.location, [cookie])


oauth_callback_router = Router()


def _cookies(raw: list[str] | None) -> dict[str, str]:
    jar: dict[str, str] = {}
    for entry in raw or []:
        for part in entry.split(";"):
            name, _, value = part.strip().partition("=")
            if name and name not in jar:
                jar[name] = value
    return jar


@oauth_callback_router.get("/oauth2/callback", include_in_schema=False)
def oauth_callback() -> Response[Any]:
    event = cast(APIGatewayProxyEventV2, oauth_callback_router.current_event)
    try:
        location = flows.complete_callback(
            get_settings(), dict(event.query_string_parameters or {}), _cookies(event.cookies)
        )
    except flows.FlowError as error:
        return _error_page(error)
    # The binding cookie has done its job: expire it.
    settings = get_settings()
    spent = Cookie(
        name=flows.cookie_name(settings),
        value="",
        path="/",
        secure=settings.cookie_secure,
        http_only=True,
        same_site=SameSite.LAX_MODE,
        max_age=0,
    )
    return _redirect(location, [spent])


# ------------------------------------------------------------------ feeds

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
    return _json(200, feeds.list_feeds(get_settings(), caller, limit, cursor))


get_feed_router = Router()


@get_feed_router.get(
    "/feeds/<feed_id>",
    summary="Get one feed",
    responses=documented_responses(200, "The feed", FeedOut, 401, 404, 422) | FORBIDDEN,
    security=access.READ,
)
def get_feed(feed_id: FeedId) -> Response[FeedOut]:
    view = feeds.get_feed(get_settings(), current_caller(get_feed_router), feed_id)
    return _json(200, view, etag=view.version)


create_feed_router = Router()


@create_feed_router.post(
    "/feeds",
    summary="Register a product feed, public or protected by one of the tenant's connections",
    responses=documented_responses(201, "Created", FeedOut, 400, 401, 413, 415, 422) | FORBIDDEN,
    security=access.MANAGE,
)
def create_feed(request: Annotated[FeedCreate, Body()]) -> Response[FeedOut]:
    view = feeds.create_feed(get_settings(), current_caller(create_feed_router), request)
    return _json(201, view, etag=view.version)


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
    view = feeds.update_feed(get_settings(), caller, feed_id, request, _parse_if_match(if_match))
    return _json(200, view, etag=view.version)


delete_feed_router = Router()


@delete_feed_router.delete(
    "/feeds/<feed_id>",
    summary="Delete a feed (its stored objects expire by the bucket's lifecycle)",
    responses=documented_responses(204, "Deleted", None, 401, 404, 409, 422) | FORBIDDEN,
    security=access.MANAGE,
)
def delete_feed(feed_id: FeedId) -> Response[None]:
    feeds.delete_feed(get_settings(), current_caller(delete_feed_router), feed_id)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


run_feed_router = Router()


@run_feed_router.post(
    "/feeds/<feed_id>/run",
    summary="Fetch the feed now",
    responses=documented_responses(202, "Queued", FeedRunQueued, 401, 404, 422) | FORBIDDEN,
    security=access.MANAGE,
)
def run_feed(feed_id: FeedId) -> Response[FeedRunQueued]:
    feeds.run_now(get_settings(), current_caller(run_feed_router), feed_id)
    return _json(202, FeedRunQueued())


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
    return _json(200, feeds.list_runs(get_settings(), current_caller(list_feed_runs_router), feed_id, limit))


API_ROUTERS = (
    list_connections_router,
    get_connection_router,
    create_connection_router,
    update_connection_router,
    delete_connection_router,
    refresh_connection_router,
    start_authorization_router,
    authorize_redirect_router,
    oauth_callback_router,
    list_feeds_router,
    get_feed_router,
    create_feed_router,
    update_feed_router,
    delete_feed_router,
    run_feed_router,
    list_feed_runs_router,
    openapi_router,
)
