"""Who is calling: the tenant (from the authorizer's claims only) and where the API is reached."""

from __future__ import annotations

from dataclasses import dataclass

CALLBACK_PATH = "/oauth2/callback"


@dataclass(frozen=True)
class Caller:
    """Who is calling: the tenant from the authorizer's claims, and where the API is reached."""

    tenant_id: str
    callback_url: str
