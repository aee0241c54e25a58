"""GET /openapi.json: the document of every route of the API, scopes as deployed.

The document is built at build time (openapi_build.py, `make openapi`) into openapi.json beside this
module: building it at run time would import every router and Powertools' OpenAPI models and generate
every schema, most of a second of this function's cold start. Only the scope names are applied here, as
this deployment enforces them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from oauth_connections.core.config import get_settings
from oauth_connections.entrypoints.http import access
from oauth_connections.entrypoints.http.resolver import documented, json_response

DOCUMENT_PATH = Path(__file__).with_name("openapi.json")

openapi_router = Router()


@openapi_router.get(
    "/openapi.json", summary="This API's OpenAPI document", **documented(access.READ, 200, "The document", None, 401)
)
def openapi_document() -> Response[dict[str, Any]]:
    return json_response(200, access.with_deployed_scopes(built_document(), get_settings()))


@cache
def built_document() -> dict[str, Any]:
    """The document as built, in the default scope names; read once per process (callers copy it)."""
    document: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
    return document
