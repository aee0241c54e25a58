"""Builds the OpenAPI document from every router of the API, in the default scope names.

Run at build time: `make openapi` writes it to openapi.json beside this module, which the document function
serves (with the deployed scope names) without importing any other route; a test holds that file to the
routes. Building it takes the OpenAPI models and every router's models, most of a second of a cold start.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

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
from oauth_connections.entrypoints.http.openapi import DOCUMENT_PATH, openapi_router
from oauth_connections.entrypoints.http.providers import list_providers_router
from oauth_connections.entrypoints.http.resolver import build_resolver

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


def build_document() -> dict[str, Any]:
    document = build_resolver(API_ROUTERS).get_openapi_json_schema(
        title="OAuth2 connection service", version="1.0.0", security_schemes=access.security_schemes()
    )
    built: dict[str, Any] = json.loads(document)
    return built


def write_document(path: Path = DOCUMENT_PATH) -> None:
    path.write_text(json.dumps(build_document(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_document(Path(sys.argv[1]) if len(sys.argv) > 1 else DOCUMENT_PATH)
