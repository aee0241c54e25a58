"""GET /openapi.json: the document of every route of the API, scopes as deployed."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from oauth_connections.core.config import get_settings
from oauth_connections.entrypoints.http import access
from oauth_connections.entrypoints.http.activity import (
    list_activity_router,
    list_connection_activity_router,
    list_feed_activity_router,
)
from oauth_connections.entrypoints.http.browser import authorize_redirect_router, oauth_callback_router
from oauth_connections.entrypoints.http.connections import (
    create_connection_router,
    delete_connection_router,
    get_connection_router,
    list_connections_router,
    refresh_connection_router,
    start_authorization_router,
    test_connection_router,
    update_connection_router,
)
from oauth_connections.entrypoints.http.feeds import (
    create_feed_router,
    delete_feed_router,
    get_feed_router,
    list_feed_runs_router,
    list_feeds_router,
    run_feed_router,
    update_feed_router,
)
from oauth_connections.entrypoints.http.providers import list_providers_router
from oauth_connections.entrypoints.http.resolver import documented, json_response

openapi_router = Router()


@openapi_router.get(
    "/openapi.json", summary="This API's OpenAPI document", **documented(access.READ, 200, "The document", None, 401)
)
def openapi_document() -> Response[dict[str, Any]]:
    from oauth_connections.entrypoints.http.resolver import build_resolver

    document = build_resolver(API_ROUTERS).get_openapi_json_schema(
        title="OAuth2 connection service", version="1.0.0", security_schemes=access.security_schemes()
    )
    return json_response(200, access.with_deployed_scopes(json.loads(document), get_settings()))


API_ROUTERS = (
    list_connections_router,
    get_connection_router,
    create_connection_router,
    update_connection_router,
    delete_connection_router,
    refresh_connection_router,
    test_connection_router,
    start_authorization_router,
    list_connection_activity_router,
    list_activity_router,
    authorize_redirect_router,
    oauth_callback_router,
    list_feeds_router,
    get_feed_router,
    create_feed_router,
    update_feed_router,
    delete_feed_router,
    run_feed_router,
    list_feed_runs_router,
    list_feed_activity_router,
    list_providers_router,
    openapi_router,
)
