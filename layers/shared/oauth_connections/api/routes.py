"""Route definitions of the REST API, one router per function (each function serves its own routes;
the OpenAPI function includes them all to describe the whole API)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query

from oauth_connections import connections
from oauth_connections.api.http import current_caller, documented_responses
from oauth_connections.config import get_settings
from oauth_connections.errors import InvalidRequestError
from oauth_connections.models import ConnectionCreate, ConnectionOut, ConnectionPage, ConnectionUpdate

ConnectionId = Annotated[str, Path(max_length=64, description="Connection id (con_...)")]
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
    if not tag.isdigit() or len(tag) > 18:
        raise InvalidRequestError("If-Match must be an ETag returned by this API", code="invalid_if_match")
    return int(tag)


list_connections_router = Router()


@list_connections_router.get(
    "/connections",
    summary="List the tenant's connections",
    responses=documented_responses(200, "A page of connections", ConnectionPage, 400, 401, 422),
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
    responses=documented_responses(200, "The connection", ConnectionOut, 401, 404, 422),
)
def get_connection(connection_id: ConnectionId) -> Response[ConnectionOut]:
    caller = current_caller(get_connection_router)
    view = connections.get_connection(get_settings(), caller, connection_id)
    return _json(200, view, etag=view.version)


create_connection_router = Router()


@create_connection_router.post(
    "/connections",
    summary="Register a provider's OAuth2 app as a connection",
    responses=documented_responses(201, "Created", ConnectionOut, 400, 401, 409, 413, 422),
)
def create_connection(request: Annotated[ConnectionCreate, Body()]) -> Response[ConnectionOut]:
    caller = current_caller(create_connection_router)
    view = connections.create_connection(get_settings(), caller, request)
    return _json(201, view, etag=view.version)


update_connection_router = Router()


@update_connection_router.patch(
    "/connections/<connection_id>",
    summary="Change some settings of a connection",
    description="Send `If-Match` with the ETag you read to have a stale update refused with 412.",
    responses=documented_responses(200, "Updated", ConnectionOut, 400, 401, 404, 409, 412, 413, 422),
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
    responses=documented_responses(204, "Deleted", None, 401, 404, 409, 422),
)
def delete_connection(connection_id: ConnectionId) -> Response[None]:
    caller = current_caller(delete_connection_router)
    connections.delete_connection(get_settings(), caller, connection_id)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


openapi_router = Router()

API_ROUTERS = (
    list_connections_router,
    get_connection_router,
    create_connection_router,
    update_connection_router,
    delete_connection_router,
    openapi_router,
)


@openapi_router.get("/openapi.json", summary="This API's OpenAPI document", include_in_schema=False)
def openapi_document() -> Response[str]:
    from oauth_connections.api.http import build_resolver

    document = build_resolver(API_ROUTERS).get_openapi_json_schema(title="OAuth2 connection service", version="1.0.0")
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=document)
