"""Who may call which route: the read scope and the manage scope of the platform's bearer token.

API Gateway enforces them: every route of template.yaml lists its ``AuthorizationScopes``, named by
the ``ReadScope`` and ``ManageScope`` Parameters. Each operation of the OpenAPI document states the
same in its security requirement (in the default names below), and a test holds the template to the
document. A route accepts a token that carries any one of its scopes, so a requirement is a list of
alternatives of one scope each; reading also accepts the manage scope.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from oauth_connections.core.config import Settings

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.models import SecurityScheme

BEARER_SCHEME = "platformJwt"
# The defaults of the ReadScope and ManageScope Parameters; the served document shows the deployed names.
READ_SCOPE = "connections:read"
MANAGE_SCOPE = "connections:manage"

READ: list[dict[str, list[str]]] = [{BEARER_SCHEME: [READ_SCOPE]}, {BEARER_SCHEME: [MANAGE_SCOPE]}]
MANAGE: list[dict[str, list[str]]] = [{BEARER_SCHEME: [MANAGE_SCOPE]}]


def security_schemes() -> dict[str, SecurityScheme]:
    """The document's bearer scheme. Built on demand: Powertools' OpenAPI models take tens of milliseconds
    to import, and only the function that serves the document needs them, not every API function."""
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    return {
        BEARER_SCHEME: HTTPBearer(
            bearerFormat="JWT",
            description=(
                "The platform's bearer token; its tenant claim names the tenant. An operation lists the scopes "
                "it accepts (the token's `scope` or `scp` claim must carry one of them)."
            ),
        )
    }


# API Gateway's own answer to a valid token without any of the route's scopes.
FORBIDDEN: dict[int, OpenAPIResponse] = {
    403: {
        "description": "Forbidden: the token carries none of the operation's scopes (the gateway's answer)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"message": {"type": "string", "const": "Forbidden"}},
                    "required": ["message"],
                    "additionalProperties": False,
                }
            }
        },
    }
}


def with_deployed_scopes(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The document as this deployment enforces it: its scope names, or no scopes at all when they are off."""
    names = {READ_SCOPE: settings.read_scope, MANAGE_SCOPE: settings.manage_scope}
    deployed = copy.deepcopy(document)
    for operations in deployed.get("paths", {}).values():
        for operation in operations.values():
            requirement = operation.get("security")
            if not requirement:
                continue
            if settings.require_scopes:
                operation["security"] = [
                    {scheme: [names[scope] for scope in scopes] for scheme, scopes in alternative.items()}
                    for alternative in requirement
                ]
            else:
                operation["security"] = [{BEARER_SCHEME: []}]
                operation["responses"].pop("403", None)
    return deployed
