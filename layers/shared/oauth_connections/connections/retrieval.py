"""GetTokenFunction's logic: a valid access token for the platform's other functions, fast.

A warm retrieval of a valid token costs one consistent DynamoDB read and no KMS call (the data key of
the stored ciphertext is cached in memory by security/crypto.py). A refresh happens only when the token expires
within `min_valid_seconds`, or when a consumer that got a 401 sets `force_refresh`. CallApiFunction takes
its tokens from here too (load_for_token, current_tokens), in-process.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from oauth_connections.connections import tokens
from oauth_connections.connections.refresh import TokenError, refresh_connection
from oauth_connections.connections.usage import mark_used
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import Settings
from oauth_connections.core.errors import NotFoundError
from oauth_connections.core.ids import CONNECTION_ID_PREFIX, TENANT_PATTERN, is_id
from oauth_connections.oauth import token_endpoint
from oauth_connections.oauth.token_endpoint import TokenSet
from oauth_connections.storage.binding import bind_table
from oauth_connections.storage.connections import CONNECTIONS, ConnectionRecord

TenantId = Annotated[str, StringConstraints(pattern=TENANT_PATTERN.pattern)]


class GetTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    tenant_id: TenantId
    connection_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    min_valid_seconds: Annotated[int, Field(ge=0, le=86_400)] = 60
    force_refresh: bool = False
    correlation_id: Annotated[str, StringConstraints(max_length=128)] | None = None


def error_response(error: TokenError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.retry_after is not None:
        body["retry_after_seconds"] = error.retry_after
    return {"error": body}


def parse_request(event: Any) -> GetTokenRequest:
    try:
        return GetTokenRequest.model_validate(event)
    except ValidationError as error:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "request" for e in error.errors()})
        raise TokenError("invalid_request", f"invalid request: {', '.join(fields)}") from error


def get_token(settings: Settings, request: GetTokenRequest) -> dict[str, Any]:
    record = load_for_token(settings, request.tenant_id, request.connection_id)
    current = current_tokens(settings, record, request.min_valid_seconds, force_refresh=request.force_refresh)
    mark_used(record)
    allowed = allowed_urls_of(record, current)
    return {
        "access_token": current.access_token,
        "token_type": current.token_type,
        "expires_at": datetime.fromtimestamp(current.expires_at, UTC).isoformat() if current.expires_at else None,
        "scopes": list(current.scopes) if current.scopes is not None else list(record.scopes or []),
        "allowed_urls": list(allowed),
        "metadata": dict(current.metadata),
        "api_base": api_base(record, current, allowed),
    }


def load_for_token(settings: Settings, tenant_id: str, connection_id: str) -> ConnectionRecord:
    """The tenant's connection, read consistently (the one read of a warm retrieval), or the TokenError why not."""
    if not is_id(connection_id, CONNECTION_ID_PREFIX):
        raise TokenError("not_found", "connection not found")
    bind_table(settings.connections_table_name)
    try:
        record = CONNECTIONS.load(tenant_id, connection_id, consistent=True)
    except NotFoundError as error:
        raise TokenError("not_found", "connection not found") from error
    if record.status == "reauthorization_required":
        raise TokenError("reauthorization_required", "the connection must be authorized again")
    return record


def current_tokens(
    settings: Settings,
    record: ConnectionRecord,
    min_valid_seconds: int,
    *,
    force_refresh: bool,
    reason: str | None = None,
    actor: str | None = None,
) -> TokenSet:
    """The stored tokens, refreshed first when they expire within min_valid_seconds or a consumer saw a 401.
    `reason` and `actor` name what asked, for the activity log (by default: forced, or expiring)."""
    current = tokens.decrypt_tokens(settings, record)
    if current is None:
        raise TokenError("not_connected", "the connection has not been authorized yet")
    if _needs_refresh(settings, record, current, min_valid_seconds, force_refresh=force_refresh):
        asked_by = reason or ("forced" if force_refresh else "expiring")
        return refresh_connection(settings, record, reason=asked_by, actor=actor).tokens
    return current


def allowed_urls_of(record: ConnectionRecord, current: TokenSet | None = None) -> tuple[str, ...]:
    """Where the token may be sent: the connection's allowed_urls, `{name}` templates filled in from
    the kept metadata (the tokens' own when at hand, else the copy on the record)."""
    metadata = current.metadata if current is not None else (record.metadata or {})
    return token_endpoint.resolved_allowed_urls(record.allowed_urls or [], tokens.quirks_of(record), metadata)


def api_base(record: ConnectionRecord, current: TokenSet, allowed: tuple[str, ...]) -> str | None:
    """The kept value a rule marks `use: api_base` (Salesforce's instance_url, Zoho's api_domain), else the
    first allowed URL (what CallApiFunction puts a relative `path` under), else None."""
    quirks = tokens.quirks_of(record)
    for rule in quirks.response_metadata + quirks.callback_metadata:
        if rule.use == "api_base" and rule.name in current.metadata:
            return str(current.metadata[rule.name])
    return allowed[0] if allowed else None


def _needs_refresh(
    settings: Settings, record: ConnectionRecord, current: TokenSet, min_valid_seconds: int, *, force_refresh: bool
) -> bool:
    if force_refresh:
        # Many consumers may report the same 401 at once: tokens this young were just refreshed for them.
        obtained = record.refreshed_at or record.connected_at
        age = (utcnow() - obtained).total_seconds() if obtained else float("inf")
        return age >= settings.force_refresh_min_interval_seconds
    if current.expires_at is None:
        return False  # used until a consumer reports a 401
    return bool(current.expires_at - time.time() < min_valid_seconds)
