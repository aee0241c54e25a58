"""Routes of the connections API, one router per function (each function serves its own routes; the OpenAPI
function includes them all to describe the whole API)."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import AwareDatetime

from oauth_connections.connections import service
from oauth_connections.connections.models import (
    AuthorizeRequest,
    AuthorizeResponse,
    ConnectionOut,
    ConnectionTestResult,
)
from oauth_connections.core.config import get_settings
from oauth_connections.entrypoints.http import access
from oauth_connections.entrypoints.http.access import FORBIDDEN
from oauth_connections.entrypoints.http.collection import ApiCollection, collection_routers
from oauth_connections.entrypoints.http.resolver import (
    current_caller,
    documented,
    documented_responses,
    json_response,
    versioned_response,
)

UnusedSince = Annotated[
    AwareDatetime | None,
    Query(description="Only connections not used (no token retrieved, no call made) since this time, or never"),
]
ConnectionId = Annotated[str, Path(pattern=r"^con_[0-9a-hjkmnp-tv-z]{26}$", description="Connection id (con_...)")]


CONNECTION_ROUTERS = collection_routers(
    ApiCollection("connection", "connections", ConnectionId, service, "connections"),
    create="Register a provider's OAuth2 app as a connection",
    delete="Delete a connection with its secret and tokens",
    update_description="Send `If-Match` with the ETag you read to have a stale update refused with 412. Changing "
    "client_id, issuer, an endpoint, token_auth_method or grant_type ends the grant (the connection is pending "
    "again); moving the token or revocation endpoint to another origin needs client_secret in the same request "
    "(422 client_secret_required).",
    create_errors=(409,),
    list_filters={"unused_since": UnusedSince},
)
(
    list_connections_router,
    get_connection_router,
    create_connection_router,
    update_connection_router,
    delete_connection_router,
) = CONNECTION_ROUTERS


refresh_connection_router = Router()


@refresh_connection_router.post(
    "/connections/<connection_id>/refresh",
    summary="Refresh the connection's tokens now",
    description="Goes through the same single-flight refresh as token retrieval; 503 carries Retry-After.",
    **documented(access.MANAGE, 200, "The refreshed connection", ConnectionOut, 401, 404, 409, 422, 503),
)
def refresh_connection(connection_id: ConnectionId) -> Response[ConnectionOut]:
    caller = current_caller(refresh_connection_router)
    view = service.refresh_now(get_settings(), caller, connection_id)
    return versioned_response(200, view)


test_connection_router = Router()


@test_connection_router.post(
    "/connections/<connection_id>/test",
    summary="Test the connection against its provider's API",
    description="GETs the connection's test_url with its token (the rules of CallApiFunction) and keeps the "
    "outcome as last_test; ok is false, not an error, when the API refused or did not answer. 409 no_test_url "
    "when none is set, not_connected before the connection is authorized.",
    **documented(access.MANAGE, 200, "The test's outcome", ConnectionTestResult, 401, 404, 409, 422),
)
def run_connection_test(connection_id: ConnectionId) -> Response[ConnectionTestResult]:
    # Imported here: the engine (the ClientLayer, with requests) is in this function's layers only.
    from oauth_connections.connections import api_calls

    caller = current_caller(test_connection_router)
    return json_response(200, api_calls.run_connection_test(get_settings(), caller, connection_id))


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
    from oauth_connections.connections import flows  # only this route of the module's functions starts flows

    caller = current_caller(start_authorization_router)
    return_url = request.return_url if request else None
    display = request.display if request else "page"
    start = flows.start_authorization(get_settings(), caller, connection_id, return_url, display)
    if isinstance(start, flows.DirectConnection):
        return json_response(200, AuthorizeResponse(status=start.status, token_expires_at=start.token_expires_at))
    return json_response(200, AuthorizeResponse(redirect_url=start.redirect_url, expires_at=start.expires_at))
