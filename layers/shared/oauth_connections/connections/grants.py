"""What a connection's grant and its client secret are bound to.

Tokens belong to the provider and the client they were issued under, and a client secret belongs to
the endpoints it was entered for. Editing a connection must not move either elsewhere:
- changing a setting in GRANT_FIELDS ends the grant (the tokens are dropped and revoked);
- an edit that points the token or revocation endpoint at another origin (scheme, host, port) must
  bring its own client secret, or the stored one would be sent there;
- an authorization flow and a token write carry the fingerprint of the settings they began under,
  and are refused when the connection no longer has them.
Pure functions only: no storage, no network.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from oauth_connections.core.errors import ValidationFailedError

GRANT_FIELDS = (
    "client_id",
    "issuer",
    "authorization_url",
    "token_url",
    "revocation_url",
    "refresh_url",
    "token_auth_method",
    "grant_type",
    "quirks",
)
SECRET_ENDPOINTS = ("token_url", "revocation_url", "refresh_url")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


def secret_origins(record: Any) -> set[tuple[str, str, int]]:
    """The origins the stored client secret was entered for: those of the token and revocation endpoints."""
    return {origin(url) for url in (getattr(record, name) for name in SECRET_ENDPOINTS) if url}


def check_secret_destinations(before: set[tuple[str, str, int]], after: Any, *, keeps_stored_secret: bool) -> None:
    """Refuse an edit that would send the stored client secret to an origin it was not entered for."""
    if not keeps_stored_secret:
        return
    moved = [name for name in SECRET_ENDPOINTS if getattr(after, name) and origin(getattr(after, name)) not in before]
    if moved:
        raise ValidationFailedError(
            f"{' and '.join(moved)} moved to another origin: give the client_secret for it in the same request "
            "(or token_auth_method 'none' with client_secret null)",
            code="client_secret_required",
        )


def changed_grant_fields(record: Any, changes: dict[str, Any]) -> list[str]:
    """The grant settings an edit really changes (setting the stored value again is no change)."""
    return [name for name in GRANT_FIELDS if name in changes and changes[name] != getattr(record, name)]


def fingerprint(record: Any) -> str:
    """A digest of the grant settings, for flows and token writes to check they still apply."""
    values: Iterable[Any] = (getattr(record, name) for name in GRANT_FIELDS)
    return hashlib.sha256(json.dumps(list(values)).encode()).hexdigest()[:32]
