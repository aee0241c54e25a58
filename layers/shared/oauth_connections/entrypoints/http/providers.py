"""GET /providers: the provider catalog, for a create form (no tenant data; the token still must be valid)."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from oauth_connections.entrypoints.http import access
from oauth_connections.entrypoints.http.resolver import current_caller, documented, json_response
from oauth_connections.profiles import catalog
from oauth_connections.profiles.models import ProviderList

list_providers_router = Router()


@list_providers_router.get(
    "/providers",
    summary="List the catalog's providers and what creating a connection to each takes",
    **documented(access.READ, 200, "The providers", ProviderList, 401),
)
def list_providers() -> Response[ProviderList]:
    current_caller(list_providers_router)  # the authorizer's claims must name a tenant, as everywhere
    return json_response(200, ProviderList.model_validate({"items": catalog.summaries()}))
