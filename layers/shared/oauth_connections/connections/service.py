"""Connection management: the domain logic behind the connections API."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from oauth_connections.connections import activity, grants
from oauth_connections.connections.models import (
    ConnectionCreate,
    ConnectionOut,
    ConnectionPage,
    ConnectionTestResult,
    ConnectionUpdate,
    ProviderQuirks,
    check_grant,
    check_public_client_pkce,
    check_secret_for_method,
    check_thumbprint,
    check_url_templates,
)
from oauth_connections.core.caller import Caller
from oauth_connections.core.config import Settings
from oauth_connections.core.errors import (
    ConflictError,
    DecryptionError,
    UnsafeUrlError,
    ValidationFailedError,
)
from oauth_connections.core.ids import CONNECTION_ID_PREFIX, new_id
from oauth_connections.core.observability import logger
from oauth_connections.core.views import view_of
from oauth_connections.security.crypto import EncryptionContext, KeyUnavailableError, envelope_for
from oauth_connections.security.policy import url_policy
from oauth_connections.storage.binding import bind_table
from oauth_connections.storage.connections import (
    CONNECTIONS,
    ConnectionRecord,
    insert_connection,
    remove_connection,
    save_connection,
)


def _bind(settings: Settings) -> None:
    bind_table(settings.connections_table_name)


def _encrypt_secret(settings: Settings, tenant_id: str, connection_id: str, secret: str) -> bytes:
    """A new client secret gets a new connection key (the tokens join it on their next write)."""
    envelope = envelope_for(settings.encryption_key_arn)
    context = EncryptionContext(tenant_id, connection_id, "client_secret")
    return envelope.seal(secret.encode(), context, envelope.new_connection_key(tenant_id, connection_id))


def to_view(record: ConnectionRecord, caller: Caller) -> ConnectionOut:
    browser_flow = record.grant_type == "authorization_code"
    return view_of(
        ConnectionOut,
        record,
        id=record.connection_id,
        has_client_secret=record.client_secret_ciphertext is not None,
        has_certificate_thumbprint=record.certificate_thumbprint is not None,
        scopes=list(record.scopes or []),
        use_pkce=record.use_pkce if browser_flow else None,
        extra_authorize_params=dict(record.extra_authorize_params or {}),
        allowed_urls=list(record.allowed_urls or []),
        last_test=ConnectionTestResult.model_validate(record.last_test) if record.last_test else None,
        config=dict(record.config or {}),
        quirks=ProviderQuirks.model_validate(record.quirks or {}),
        metadata=dict(record.metadata or {}),
        redirect_uri=caller.callback_url if browser_flow else None,
        version=int(record.settings_version or 1),
    )


def _load(settings: Settings, caller: Caller, connection_id: str) -> ConnectionRecord:
    _bind(settings)
    return CONNECTIONS.load_requested(caller.tenant_id, connection_id)


def _discover_into(settings: Settings, fields: dict[str, Any], explicit: set[str]) -> None:
    """Set the endpoints the tenant did not give from the issuer's metadata (each URL vetted).

    An endpoint the metadata does not name is cleared: one left from another issuer is not this one's.
    """
    from oauth_connections.oauth import discovery
    from oauth_connections.security.netguard import check_url

    policy = url_policy()
    metadata = discovery.discover(fields["issuer"], policy, settings.outbound_timeout_seconds)
    discovered = {
        "authorization_url": metadata.authorization_endpoint,
        "token_url": metadata.token_endpoint,
        "revocation_url": metadata.revocation_endpoint,
    }
    for field, url in discovered.items():
        if field in explicit:
            continue
        try:
            fields[field] = check_url(url, policy) if url else None
        except UnsafeUrlError as error:
            raise discovery.DiscoveryError(f"the metadata's {field} is refused: {error.message}") from error
    fields["iss_parameter_supported"] = metadata.iss_parameter_supported
    if not fields.get("token_url"):
        raise ValidationFailedError("the issuer's metadata names no token endpoint; give token_url")


def create_connection(settings: Settings, caller: Caller, request: ConnectionCreate) -> ConnectionOut:
    check_public_client_pkce(request.token_auth_method, use_pkce=request.use_pkce)
    _bind(settings)
    connection_id = new_id(CONNECTION_ID_PREFIX)
    fields = request.model_dump(exclude={"client_secret"})
    if request.issuer:
        _discover_into(settings, fields, {f for f in request.model_fields_set if fields.get(f) is not None})
    secret = request.client_secret
    record = CONNECTIONS.new(
        caller.tenant_id,
        connection_id,
        client_secret_ciphertext=(
            _encrypt_secret(settings, caller.tenant_id, connection_id, secret) if secret is not None else None
        ),
        **fields,
    )
    insert_connection(record)
    logger.info("connection created", extra={"tenant_id": caller.tenant_id, "connection_id": connection_id})
    _announce(settings, caller, connection_id, "connection.created", name=record.name, grant_type=record.grant_type)
    return to_view(record, caller)


def _announce(settings: Settings, caller: Caller, connection_id: str, kind: str, **details: Any) -> None:
    """A user's change: one activity entry naming the user, and the event of the same name."""
    from oauth_connections.core import events

    activity.record_activity(
        settings, caller.tenant_id, connection_id, kind, actor=caller.user_id, trigger="api", **details
    )
    events.publish(settings.event_bus_name, kind, tenant_id=caller.tenant_id, connection_id=connection_id, **details)


def get_connection(settings: Settings, caller: Caller, connection_id: str) -> ConnectionOut:
    return to_view(_load(settings, caller, connection_id), caller)


def list_connections(
    settings: Settings, caller: Caller, limit: int, cursor: str | None, unused_since: datetime | None = None
) -> ConnectionPage:
    """A page of the tenant's connections; with `unused_since`, only those not used since then (or never).

    The filter applies to each page, so a page may hold fewer than `limit` items and still have a next one.
    """
    _bind(settings)
    records, next_cursor = CONNECTIONS.page(caller.tenant_id, limit, cursor)
    if unused_since is not None:
        records = [r for r in records if r.last_used_at is None or r.last_used_at < unused_since]
    return ConnectionPage(items=[to_view(r, caller) for r in records], next_cursor=next_cursor)


GRANT_ENDED_REASON = "settings_changed"
RECOVERABLE_REASON = "invalid_client"


_KEEP = object()  # no new client secret


class _Edit:
    """One attempt of an edit on the record as last read: its checks, the grant it ends, the write."""

    def __init__(self, settings: Settings, changes: dict[str, Any], ciphertext: Any) -> None:
        self.settings, self.changes, self.ciphertext = settings, changes, ciphertext
        self.old_name = ""
        self.ended: list[str] = []
        self.before: ConnectionRecord | None = None

    def apply(self, record: ConnectionRecord) -> None:
        self.old_name = record.name
        secret_changed = self.ciphertext is not _KEEP
        secret_origins = grants.secret_origins(record)
        self.ended = grants.changed_grant_fields(record, self.changes) if record.tokens_ciphertext is not None else []
        self.before = copy.deepcopy(record) if self.ended else None
        for field, value in self.changes.items():
            setattr(record, field, value)
        if secret_changed:
            record.client_secret_ciphertext = self.ciphertext
        try:
            check_secret_for_method(record.token_auth_method, has_secret=record.client_secret_ciphertext is not None)
            check_grant(record.grant_type, record.token_auth_method)
            check_thumbprint(record.token_auth_method, record.certificate_thumbprint)
            check_url_templates(list(record.allowed_urls or []), ProviderQuirks.model_validate(record.quirks or {}))
        except ValueError as error:
            raise ValidationFailedError(str(error)) from error
        check_public_client_pkce(record.token_auth_method, use_pkce=record.use_pkce)
        grants.check_secret_destinations(
            secret_origins,
            record,
            keeps_stored_secret=not secret_changed and record.client_secret_ciphertext is not None,
        )
        if self.ended:
            _drop_grant(self.settings, record)

    def save(self, record: ConnectionRecord) -> None:
        save_connection(record, old_name=self.old_name)


def update_connection(
    settings: Settings, caller: Caller, connection_id: str, request: ConnectionUpdate, if_match: int | None
) -> ConnectionOut:
    """Apply a partial update under the version read.

    With If-Match, a change of the settings since (their own version, the ETag) is refused (412).
    A concurrent write that left the settings alone (a token refresh, a lease, a status) only moves
    the item's write version: the change is applied again on top, with or without If-Match.
    A change of a grant setting ends the grant (see grants.py); a new client secret retries a
    connection the provider refused because of its client.
    """
    record = _load(settings, caller, connection_id)
    changes = request.model_dump(include=request.model_fields_set, exclude={"client_secret"})
    if changes.get("issuer"):
        _discover_into(settings, changes, set(changes) - {"issuer"})
    elif "issuer" in changes:
        changes["iss_parameter_supported"] = False
    secret_changed = "client_secret" in request.model_fields_set
    secret = request.client_secret
    ciphertext = _encrypt_secret(settings, caller.tenant_id, connection_id, secret) if secret is not None else None
    edited = set(changes)
    old_values = {field: getattr(record, field) for field in edited}
    edit = _Edit(settings, changes, ciphertext if secret_changed else _KEEP)
    record = CONNECTIONS.edit(record, edit.apply, if_match, save=edit.save)
    ended, before = edit.ended, edit.before
    logger.info(
        "connection updated",
        extra={
            "tenant_id": caller.tenant_id,
            "connection_id": connection_id,
            "fields": sorted(request.model_fields_set),
        },
    )
    new_values = {field: getattr(record, field) for field in edited} | (
        {"client_secret": None} if secret_changed else {}
    )
    _announce(
        settings, caller, connection_id, "connection.updated", changes=activity.field_changes(old_values, new_values)
    )
    if before is not None:
        _announce_grant_ended(settings, before, ended)
    elif secret is not None and record.status == "reauthorization_required":
        record = _retry_with_new_secret(settings, record)
    return to_view(record, caller)


# What a connection holds once its grant is dropped: no tokens, no lease, nothing failing, pending again.
WITHOUT_GRANT: dict[str, Any] = {
    "tokens_ciphertext": None,
    "recovered_tokens_ciphertext": None,
    "recovered_after_version": None,
    "has_refresh_token": False,
    "expires_at": None,
    "granted_scopes": None,
    "metadata": None,
    "connected_at": None,
    "refreshed_at": None,
    "lease_owner": None,
    "lease_expires_at": None,
    "next_attempt_at": None,
    "consecutive_failures": 0,
    "failing_since": None,
    "status": "pending",
    "status_reason": GRANT_ENDED_REASON,
}


def _drop_grant(settings: Settings, record: ConnectionRecord) -> None:
    """End the grant in the same write as the edit: the fields of WITHOUT_GRANT, and nothing due.

    The token version moves on, so a refresh that read the old settings cannot store its answer, and
    the lease is cleared, so such a refresh cannot record its outcome on the edited connection either.
    """
    from oauth_connections.connections import refresh_schedule

    for field, value in WITHOUT_GRANT.items():
        setattr(record, field, value)
    record.token_version = int(record.token_version or 0) + 1
    refresh_schedule.apply_due(settings, record)


def _announce_grant_ended(settings: Settings, before: ConnectionRecord, fields: list[str]) -> None:
    """Revoke the dropped grant with the settings it was issued under (best effort), and say so."""
    from oauth_connections.core import events

    revoked = revoke_tokens(settings, before)
    activity.record_activity(
        settings,
        before.tenant_id,
        before.connection_id,
        "connection.grant_ended",
        actor=None,
        trigger="edit",
        changed_fields=fields,
        revoked=revoked,
    )
    logger.info(
        "grant ended by an edit",
        extra={"tenant_id": before.tenant_id, "connection_id": before.connection_id, "fields": fields},
    )
    events.publish(
        settings.event_bus_name,
        "connection.grant_ended",
        tenant_id=before.tenant_id,
        connection_id=before.connection_id,
        status="pending",
        reason=GRANT_ENDED_REASON,
        changed_fields=fields,
        revoked=revoked,
    )


def _retry_with_new_secret(settings: Settings, record: ConnectionRecord) -> ConnectionRecord:
    """A connection refused for its client secret tries one refresh with the new one."""
    from oauth_connections.connections import refresh
    from oauth_connections.core import events

    if record.status_reason != RECOVERABLE_REASON:
        return record
    context = {"tenant_id": record.tenant_id, "connection_id": record.connection_id}
    try:
        refreshed = refresh.refresh_connection(settings, record, reason="client_secret_changed", retry_refused=True)
    except refresh.TokenError as error:
        logger.warning("the new client secret did not recover the connection", extra=context | {"code": error.code})
        return CONNECTIONS.load(record.tenant_id, record.connection_id, consistent=True)
    logger.info("the new client secret recovered the connection", extra=context)
    events.publish(
        settings.event_bus_name,
        "connection.connected",
        tenant_id=record.tenant_id,
        connection_id=record.connection_id,
        status="connected",
        reason="client_secret_changed",
    )
    return refreshed.record


DELETE_ATTEMPTS = 3


def delete_connection(settings: Settings, caller: Caller, connection_id: str) -> None:
    """Revoke the grant at the provider when it can be, then delete the connection whatever the answer.

    A refresh that lands meanwhile changes the item (and may hold a new refresh token): the delete then
    reads it again, revokes what is new, and deletes that version, so a refresh never turns a delete
    into a conflict that leaves the connection connected.
    """
    record = _load(settings, caller, connection_id)
    revoked_version: int | None = None
    revoked = False
    for attempt in range(DELETE_ATTEMPTS):
        if int(record.token_version or 0) != revoked_version:
            revoked = revoke_tokens(settings, record)
            revoked_version = int(record.token_version or 0)
        try:
            remove_connection(record, guarded=attempt < DELETE_ATTEMPTS - 1)
            break
        except ConflictError:
            record = CONNECTIONS.load(caller.tenant_id, connection_id, consistent=True)
    logger.info("connection deleted", extra={"tenant_id": caller.tenant_id, "connection_id": connection_id})
    _announce(settings, caller, connection_id, "connection.deleted", name=record.name, revoked=revoked)


def refresh_now(settings: Settings, caller: Caller, connection_id: str) -> ConnectionOut:
    """Force a refresh of the tenant's own connection (same single flight as token retrieval)."""
    from oauth_connections.connections import refresh

    record = _load(settings, caller, connection_id)
    if not record.tokens_ciphertext:  # checked without decrypting: the refresh decrypts them anyway
        raise refresh.TokenError("not_connected", "the connection has not been authorized yet")
    refreshed = refresh.refresh_connection(settings, record, reason="requested", actor=caller.user_id)
    return to_view(refreshed.record, caller)


def revoke_tokens(settings: Settings, record: ConnectionRecord) -> bool:
    """RFC 7009: revoke the refresh token (which ends the grant), else the access token. Best effort."""
    from oauth_connections.connections import tokens
    from oauth_connections.oauth import revocation, token_endpoint

    if not record.revocation_url or record.tokens_ciphertext is None:
        return False
    context = {"tenant_id": record.tenant_id, "connection_id": record.connection_id}
    try:
        # Tokens kept after a failed store hold the live refresh token: revoke that one.
        token_set = tokens.recovered_tokens(settings, record) or tokens.decrypt_tokens(settings, record)
        if token_set is None:
            return False
        token, hint = (
            (token_set.refresh_token, "refresh_token")
            if token_set.refresh_token
            else (token_set.access_token, "access_token")
        )
        revocation.revoke(
            tokens.client_settings(settings, record),
            record.revocation_url,
            token,
            hint,
            policy=url_policy(),
            timeout=settings.outbound_timeout_seconds,
        )
    except KeyUnavailableError as error:
        logger.error(
            "revocation skipped: the encryption key did not decrypt the tokens; deleting anyway",
            extra=context | {"error_code": error.code, "kms_error_code": error.kms_error_code},
        )
        return False
    except (token_endpoint.ProviderUnavailableError, DecryptionError) as error:
        logger.warning(
            "revocation failed; deleting anyway", extra=context | {"error_code": error.code, "reason": error.message}
        )
        return False
    logger.info("tokens revoked", extra=context)
    return True
