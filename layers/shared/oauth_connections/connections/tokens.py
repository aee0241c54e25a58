"""Tokens of a connection: stored sealed under the connection's key on the connection item, one version at a time.

A token write reuses the key the client secret is sealed under (else the stored tokens' key), so a
connection's values share one key; a new grant gets a new key, with the client secret sealed again
under it. Values in the older format are read as they are and written in the new one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from oauth_connections.connections import grants, refresh_schedule
from oauth_connections.core import events
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import Settings
from oauth_connections.core.errors import ConflictError
from oauth_connections.oauth import token_endpoint
from oauth_connections.security.crypto import ConnectionKey, EncryptionContext, envelope_for, is_sealed
from oauth_connections.storage.connections import (
    CONNECTIONS,
    ConnectionRecord,
    replace_client_secret,
    save_connection,
)

SAVE_ATTEMPTS = 3


def token_context(record: ConnectionRecord) -> EncryptionContext:
    return EncryptionContext(record.tenant_id, record.connection_id, "tokens")


def secret_context(record: ConnectionRecord) -> EncryptionContext:
    return EncryptionContext(record.tenant_id, record.connection_id, "client_secret")


def client_secret(settings: Settings, record: ConnectionRecord) -> str | None:
    ciphertext = cast(bytes | None, record.client_secret_ciphertext)  # nullable; the stubs do not say so
    if ciphertext is None:
        return None
    return envelope_for(settings.encryption_key_arn).decrypt(ciphertext, secret_context(record)).decode()


def client_settings(settings: Settings, record: ConnectionRecord) -> token_endpoint.ClientSettings:
    secret = client_secret(settings, record)
    return token_endpoint.ClientSettings(
        client_id=record.client_id,
        client_secret=secret,
        token_url=record.token_url,
        auth_method=record.token_auth_method,
        scopes=tuple(record.scopes or ()),
        scope_delimiter=record.scope_delimiter,
        quirks=quirks_of(record),
        certificate_thumbprint=record.certificate_thumbprint,
    )


def quirks_of(record: ConnectionRecord) -> token_endpoint.Quirks:
    """The stored quirk settings (validated when they were set) as the token endpoint reads them."""
    raw = record.quirks or {}

    def rules(name: str) -> tuple[token_endpoint.MetadataRule, ...]:
        return tuple(
            token_endpoint.MetadataRule(rule["name"], rule["pattern"], rule.get("use", "value"))
            for rule in raw.get(name) or ()
        )

    return token_endpoint.Quirks(
        token_request_format=raw.get("token_request_format", "form"),
        token_params=dict(raw.get("token_params") or {}),
        refresh_params=dict(raw.get("refresh_params") or {}),
        token_headers=dict(raw.get("token_headers") or {}),
        refresh_url=record.refresh_url,
        access_token_path=raw.get("access_token_path"),
        expires_in_unit=raw.get("expires_in_unit", "seconds"),
        permanent_errors=frozenset(raw.get("permanent_errors") or ()),
        response_metadata=rules("response_metadata"),
        callback_metadata=rules("callback_metadata"),
    )


def decrypt_tokens(settings: Settings, record: ConnectionRecord) -> token_endpoint.TokenSet | None:
    ciphertext = cast(bytes | None, record.tokens_ciphertext)  # nullable; the stubs do not say so
    if ciphertext is None:
        return None
    plaintext = envelope_for(settings.encryption_key_arn).decrypt(ciphertext, token_context(record))
    return token_endpoint.TokenSet.from_json(plaintext)


def recovered_tokens(settings: Settings, record: ConnectionRecord) -> token_endpoint.TokenSet | None:
    """Tokens a lease holder got from the provider but could not store, if they follow the stored ones.

    Their refresh token, not the stored one, is then the live one (the provider rotated it).
    """
    ciphertext = cast(bytes | None, record.recovered_tokens_ciphertext)
    after = record.recovered_after_version
    if ciphertext is None or after is None or int(after) != int(record.token_version or 0):
        return None
    plaintext = envelope_for(settings.encryption_key_arn).decrypt(ciphertext, token_context(record))
    return token_endpoint.TokenSet.from_json(plaintext)


def migrate_client_secret(settings: Settings, record: ConnectionRecord) -> bool:
    """Seal a client secret of the older format under the key of the connection's (just written) tokens.

    Conditional on the stored secret being the one read, so a secret changed meanwhile is kept.
    """
    stored = cast(bytes | None, record.client_secret_ciphertext)
    if stored is None or is_sealed(stored):
        return False
    secret = client_secret(settings, record)
    envelope = envelope_for(settings.encryption_key_arn)
    key = envelope.connection_key(record.tenant_id, record.connection_id, cast(bytes | None, record.tokens_ciphertext))
    sealed = envelope.seal((secret or "").encode(), secret_context(record), key)
    migrated = replace_client_secret(record, stored, sealed)
    if migrated:
        record.client_secret_ciphertext = sealed
    return migrated


def current_key(settings: Settings, record: ConnectionRecord) -> ConnectionKey:
    """The connection's key: the one its client secret is sealed under, else its tokens', else a new one."""
    return envelope_for(settings.encryption_key_arn).connection_key(
        record.tenant_id,
        record.connection_id,
        record.client_secret_ciphertext,
        cast(bytes | None, record.tokens_ciphertext),
    )


def seal_tokens(settings: Settings, record: ConnectionRecord, token_set: token_endpoint.TokenSet) -> bytes:
    return envelope_for(settings.encryption_key_arn).seal(
        token_set.to_json(), token_context(record), current_key(settings, record)
    )


def apply_tokens(
    settings: Settings,
    record: ConnectionRecord,
    token_set: token_endpoint.TokenSet,
    key: ConnectionKey | None = None,
) -> None:
    """Set the tokens on the record, sealed under `key` (by default the connection's current key)."""
    envelope = envelope_for(settings.encryption_key_arn)
    record.tokens_ciphertext = envelope.seal(
        token_set.to_json(), token_context(record), key or current_key(settings, record)
    )
    record.token_version = int(record.token_version or 0) + 1
    record.has_refresh_token = bool(token_set.refresh_token)
    record.expires_at = datetime.fromtimestamp(token_set.expires_at, UTC) if token_set.expires_at else None
    record.granted_scopes = list(token_set.scopes) if token_set.scopes is not None else None
    record.metadata = dict(token_set.metadata) or None


def store_connected(
    settings: Settings,
    tenant_id: str,
    connection_id: str,
    token_set: token_endpoint.TokenSet,
    *,
    grant: str | None = None,
) -> None:
    """Store fresh tokens from an authorization and mark the connection connected.

    A concurrent settings change bumps the version; the tokens are then re-applied on the new version,
    so neither the change nor the tokens are lost. `grant` is the fingerprint of the settings the tokens
    were obtained under: when an edit changed them meanwhile, the tokens belong to the old settings and
    are refused (ConflictError `connection_changed`).
    """
    envelope = envelope_for(settings.encryption_key_arn)
    key = envelope.new_connection_key(tenant_id, connection_id)  # a new grant, a new key
    for attempt in range(SAVE_ATTEMPTS):
        record = CONNECTIONS.load(tenant_id, connection_id, consistent=True)
        if grant is not None and grants.fingerprint(record) != grant:
            raise ConflictError("the connection's grant settings changed meanwhile", code="connection_changed")
        secret = client_secret(settings, record)
        if secret is not None:  # the versioned save below keeps a secret changed meanwhile
            record.client_secret_ciphertext = envelope.seal(secret.encode(), secret_context(record), key)
        apply_tokens(settings, record, token_set, key)
        record.recovered_tokens_ciphertext = None  # a new grant: tokens kept from the old one are void
        record.recovered_after_version = None
        record.status = "connected"
        record.connected_at = utcnow()
        record.status_reason = None
        record.next_attempt_at = None
        record.consecutive_failures = 0
        record.failing_since = None
        refresh_schedule.apply_due(settings, record)
        try:
            save_connection(record)
            break
        except ConflictError:
            if attempt == SAVE_ATTEMPTS - 1:
                raise
    events.publish(
        settings.event_bus_name,
        "connection.connected",
        tenant_id=tenant_id,
        connection_id=connection_id,
        status="connected",
        reason="authorized",
    )
