"""Connection items: the connection, its unique name claim, the due index, and their data access
(insert with the name claim, load, page, versioned save and delete, the refresh lease, the rate-limit window
and the last use)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import TransactWriteError

from oauth_connections.core.clock import utcnow
from oauth_connections.core.errors import ConflictError
from oauth_connections.core.ids import CONNECTION_ID_PREFIX
from oauth_connections.storage.collection import Collection, DueItem
from oauth_connections.storage.table import (
    DueIndex,
    TableModel,
    cancellation_codes,
    conditional_update,
    new_transaction,
    update_or_current,
)

CONNECTION_PREFIX = "CONNECTION#"
NAME_PREFIX = "NAME#"


def name_key(name: str) -> str:
    return f"{NAME_PREFIX}{name.casefold()}"


class ConnectionRecord(DueItem):
    connection_id = UnicodeAttribute()
    name = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    client_id = UnicodeAttribute()
    client_secret_ciphertext = BinaryAttribute(null=True, legacy_encoding=False)
    certificate_thumbprint = UnicodeAttribute(null=True)  # private_key_jwt's x5t#S256; write-only
    issuer = UnicodeAttribute(null=True)
    iss_parameter_supported = BooleanAttribute(default=False)
    authorization_url = UnicodeAttribute(null=True)
    token_url = UnicodeAttribute()
    revocation_url = UnicodeAttribute(null=True)
    refresh_url = UnicodeAttribute(null=True)
    quirks = JSONAttribute(default=dict)  # ProviderQuirks, as the tenant set them
    provider = UnicodeAttribute(null=True)  # the catalog profile it was created from
    config = JSONAttribute(default=dict)  # that profile's config values
    metadata = JSONAttribute(null=True)  # values kept from the token response and callback; never a secret
    scopes = ListAttribute[str](of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    scope_delimiter = UnicodeAttribute(default=" ")
    token_auth_method = UnicodeAttribute(default="client_secret_basic")
    use_pkce = BooleanAttribute(default=True)
    extra_authorize_params = JSONAttribute(default=dict)
    allowed_urls = ListAttribute[str](of=UnicodeAttribute, default=list)  # type: ignore[arg-type]
    grant_type = UnicodeAttribute(default="authorization_code")
    status = UnicodeAttribute(default="pending")
    granted_scopes = ListAttribute[str](of=UnicodeAttribute, null=True)  # type: ignore[arg-type]
    expires_at = UTCDateTimeAttribute(null=True)
    connected_at = UTCDateTimeAttribute(null=True)
    tokens_ciphertext = BinaryAttribute(null=True, legacy_encoding=False)
    token_version = NumberAttribute(default=0)
    has_refresh_token = BooleanAttribute(default=False)
    refreshed_at = UTCDateTimeAttribute(null=True)
    # Single-flight refresh: whoever holds an unexpired lease is the only caller talking to the provider.
    lease_owner = UnicodeAttribute(null=True)
    lease_expires_at = UTCDateTimeAttribute(null=True)
    # Tokens a holder got from the provider but could not store (a storage fault): the next holder adopts
    # them if the stored tokens are still those of `recovered_after_version`, instead of asking the provider.
    recovered_tokens_ciphertext = BinaryAttribute(null=True, legacy_encoding=False)
    recovered_after_version = NumberAttribute(null=True)
    # Transient provider failures: no new attempt before next_attempt_at.
    next_attempt_at = UTCDateTimeAttribute(null=True)
    consecutive_failures = NumberAttribute(default=0)
    failing_since = UTCDateTimeAttribute(null=True)
    status_reason = UnicodeAttribute(null=True)
    # The connection test: a GET of test_url with the token; its latest outcome (ConnectionTestResult's fields).
    test_url = UnicodeAttribute(null=True)
    last_test = JSONAttribute(null=True)
    # A provider's 429 through CallApiFunction: no call before rate_limited_until.
    rate_limited_until = UTCDateTimeAttribute(null=True)
    # The last token retrieval or call, to the resolution of mark_used (a write per use would be one per call).
    last_used_at = UTCDateTimeAttribute(null=True)
    due_index = DueIndex()


class ConnectionNameRecord(TableModel):
    connection_id = UnicodeAttribute()


CONNECTIONS = Collection(ConnectionRecord, CONNECTION_PREFIX, CONNECTION_ID_PREFIX, "connection")


def insert_connection(record: ConnectionRecord) -> None:
    """Insert a new connection and claim its name in one transaction."""
    name_item = ConnectionNameRecord(record.pk, name_key(record.name), connection_id=record.connection_id)
    try:
        with new_transaction() as transaction:
            transaction.save(record, condition=ConnectionRecord.pk.does_not_exist())
            transaction.save(name_item, condition=ConnectionNameRecord.pk.does_not_exist())
    except TransactWriteError as error:
        codes = cancellation_codes(error)
        if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
            raise ConflictError(f"a connection named {record.name!r} exists", code="name_taken") from error
        raise


def save_connection(record: ConnectionRecord, *, old_name: str | None = None) -> None:
    """Write back a changed connection, refused if another writer changed it first (version check).

    A rename moves the unique name claim in the same transaction.
    """
    if old_name is None or name_key(old_name) == name_key(record.name):
        CONNECTIONS.save(record)
        return
    record.updated_at = utcnow()
    try:
        with new_transaction() as transaction:
            transaction.save(record)
            transaction.delete(ConnectionNameRecord(record.pk, name_key(old_name)))
            transaction.save(
                ConnectionNameRecord(record.pk, name_key(record.name), connection_id=record.connection_id),
                condition=ConnectionNameRecord.pk.does_not_exist(),
            )
    except TransactWriteError as error:
        codes = cancellation_codes(error)
        if codes and codes[0] == "ConditionalCheckFailed":
            raise CONNECTIONS.stale() from error
        if len(codes) > 2 and codes[2] == "ConditionalCheckFailed":
            raise ConflictError(f"a connection named {record.name!r} exists", code="name_taken") from error
        raise


def remove_connection(record: ConnectionRecord, *, guarded: bool = True) -> None:
    """Delete a connection (its secret and tokens live on the item) and release its name.

    Guarded, the delete is refused if the item changed since it was read. Unguarded, only its name must
    be the one read (a rename moves the name item, which must not be left behind).
    """
    condition = None if guarded else ConnectionRecord.name == record.name
    try:
        with new_transaction() as transaction:
            transaction.delete(record, condition=condition, add_version_condition=guarded)
            transaction.delete(ConnectionNameRecord(record.pk, name_key(record.name)))
    except TransactWriteError as error:
        if cancellation_codes(error)[:1] == ["ConditionalCheckFailed"]:
            raise CONNECTIONS.stale() from error
        raise


def acquire_lease(record: ConnectionRecord, owner: str, until: datetime) -> bool:
    """Take the refresh lease if nobody holds an unexpired one and the tokens are still the ones read."""
    now = utcnow()
    free = ConnectionRecord.lease_expires_at.does_not_exist() | (ConnectionRecord.lease_expires_at < now)
    return conditional_update(
        record,
        [ConnectionRecord.lease_owner.set(owner), ConnectionRecord.lease_expires_at.set(until)],
        ConnectionRecord.pk.exists() & free & (ConnectionRecord.token_version == record.token_version),
    )


@dataclass(frozen=True)
class DueLease:
    """A try at a due connection's lease: the item as the write left it (`taken`), or as it stood when the
    write was refused (None: there is no such connection)."""

    record: ConnectionRecord | None
    taken: bool


def acquire_due_lease(tenant_id: str, connection_id: str, owner: str, until: datetime, now: datetime) -> DueLease:
    """Take the refresh lease of a connection that is due at `now`, in the one write that also reads it.

    The condition is what a read would have checked (the connection exists and is due) and what taking the
    lease needs (nobody holds an unexpired one); no earlier read, so no token version to hold on to.
    """
    free = ConnectionRecord.lease_expires_at.does_not_exist() | (ConnectionRecord.lease_expires_at < now)
    record, taken = update_or_current(
        ConnectionRecord,
        CONNECTIONS.key(tenant_id, connection_id),
        [
            ConnectionRecord.lease_owner.set(owner),
            ConnectionRecord.lease_expires_at.set(until),
            ConnectionRecord.version.add(1),
        ],
        ConnectionRecord.pk.exists() & (ConnectionRecord.due_at <= now) & free,
    )
    return DueLease(record, taken)


def store_refreshed(record: ConnectionRecord, owner: str, seen_token_version: int, actions: list[Any]) -> bool:
    """Write the result of a refresh and release the lease, only while the lease is still ours.

    Refused when the lease expired or passed to another holder, or newer tokens were stored: a holder
    that overran its lease must not overwrite a newer outcome.
    """
    return conditional_update(
        record,
        [
            *actions,
            ConnectionRecord.lease_owner.remove(),
            ConnectionRecord.lease_expires_at.remove(),
            ConnectionRecord.recovered_tokens_ciphertext.remove(),
            ConnectionRecord.recovered_after_version.remove(),
        ],
        ConnectionRecord.pk.exists()
        & (ConnectionRecord.lease_owner == owner)
        & (ConnectionRecord.lease_expires_at > utcnow())
        & (ConnectionRecord.token_version == seen_token_version),
    )


def store_recovery(record: ConnectionRecord, seen_token_version: int, ciphertext: bytes) -> bool:
    """Keep refreshed tokens that could not be stored for the next holder; refused if newer tokens exist.

    Not conditional on the lease: whoever holds it next finds them, whether or not it was ours.
    """
    return conditional_update(
        record,
        [
            ConnectionRecord.recovered_tokens_ciphertext.set(ciphertext),
            ConnectionRecord.recovered_after_version.set(seen_token_version),
        ],
        ConnectionRecord.pk.exists() & (ConnectionRecord.token_version == seen_token_version),
    )


def replace_client_secret(record: ConnectionRecord, stored: bytes, replacement: bytes) -> bool:
    """Write the client secret in another encoding, only while the stored one is still `stored`."""
    return conditional_update(
        record,
        [ConnectionRecord.client_secret_ciphertext.set(replacement)],
        ConnectionRecord.pk.exists() & (ConnectionRecord.client_secret_ciphertext == stored),
    )


def release_lease(record: ConnectionRecord, owner: str, actions: list[Any]) -> bool:
    """Record the outcome of a failed refresh and release our lease (if it is still ours)."""
    return conditional_update(
        record,
        [*actions, ConnectionRecord.lease_owner.remove(), ConnectionRecord.lease_expires_at.remove()],
        ConnectionRecord.pk.exists() & (ConnectionRecord.lease_owner == owner),
    )


def open_rate_limit_window(record: ConnectionRecord, until: datetime) -> bool:
    """Close the connection to calls until `until`; a longer window another caller set stays as it is."""
    return conditional_update(
        record,
        [ConnectionRecord.rate_limited_until.set(until)],
        ConnectionRecord.pk.exists()
        & (ConnectionRecord.rate_limited_until.does_not_exist() | (ConnectionRecord.rate_limited_until < until)),
    )


def mark_used(record: ConnectionRecord, now: datetime, resolution: timedelta) -> bool:
    """Record a use when the stored one is older than `resolution`; a fresh mark costs no write at all.

    The condition repeats the check, so concurrent first uses after a quiet spell write once between them.
    """
    stale_before = now - resolution
    if record.last_used_at is not None and record.last_used_at >= stale_before:
        return False
    return conditional_update(
        record,
        [ConnectionRecord.last_used_at.set(now)],
        ConnectionRecord.pk.exists()
        & (ConnectionRecord.last_used_at.does_not_exist() | (ConnectionRecord.last_used_at < stale_before)),
    )


def record_test(record: ConnectionRecord, result: dict[str, Any]) -> bool:
    """Keep the latest connection test's outcome (no settings change: the ETag stays)."""
    return conditional_update(record, [ConnectionRecord.last_test.set(result)], ConnectionRecord.pk.exists())
