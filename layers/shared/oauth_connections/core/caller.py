"""Who is calling: the tenant and the user (from the authorizer's claims only) and where the API is reached."""

from __future__ import annotations

from dataclasses import dataclass

CALLBACK_PATH = "/oauth2/callback"


@dataclass(frozen=True)
class Caller:
    """Who is calling: the tenant and the user from the authorizer's claims, and where the API is reached.

    The user is what the activity log names as the actor; a token without the user claim (a machine
    client, say) acts as no one in particular, which the log records as such rather than refusing it.
    """

    tenant_id: str
    callback_url: str
    user_id: str | None = None
