"""Storage: the DynamoDB items of the service and the only module that talks to DynamoDB.

One table (template.yaml: ConnectionsTable), keys `pk`/`sk`:
- a connection:            pk=TENANT#<tenant>  sk=CONNECTION#<connection id>
- its unique name:         pk=TENANT#<tenant>  sk=NAME#<case-folded name>
Every key of a tenant's items starts with the tenant, so a tenant's request can only ever address its
own items. Secrets and tokens are stored as envelope ciphertext only (see crypto.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Any, ClassVar

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.connection import Connection
from pynamodb.exceptions import DeleteError, PutError, TransactWriteError
from pynamodb.indexes import GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from oauth_connections import aws
from oauth_connections.errors import ConflictError, NotFoundError

TENANT_PREFIX = "TENANT#"
CONNECTION_PREFIX = "CONNECTION#"
FEED_PREFIX = "FEED#"
FEED_RUNS_PREFIX = "FEEDRUNS#"
RUN_PREFIX = "RUN#"
NAME_PREFIX = "NAME#"
FLOW_PREFIX = "FLOW#"
STATE_PREFIX = "STATE#"
FLOW_SORT_KEY = "FLOW"


def utcnow() -> datetime:
    return datetime.now(UTC)


def tenant_key(tenant_id: str) -> str:
    return f"{TENANT_PREFIX}{tenant_id}"


def name_key(name: str) -> str:
    return f"{NAME_PREFIX}{name.casefold()}"


class _TableModel(Model):
    """Base of the items of the connections table; the table name is bound at run time (bind_table)."""

    class Meta:
        table_name = "unbound"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)


class DueIndex(GlobalSecondaryIndex["ConnectionRecord"]):  # type: ignore[no-untyped-call]
    """Sparse, sharded index of the connections the scheduled refresh must look at, by when.

    Only connections with something to do carry `due_shard`/`due_at`; a sweep queries each shard for
    `due_at <= now`, never scanning the table.
    """

    class Meta:
        index_name = "DueIndex"
        projection = KeysOnlyProjection()

    due_shard = UnicodeAttribute(hash_key=True)
    due_at = UTCDateTimeAttribute(range_key=True)


class ConnectionRecord(_TableModel):
    tenant_id = UnicodeAttribute()
    connection_id = UnicodeAttribute()
    name = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    client_id = UnicodeAttribute()
    client_secret_ciphertext = BinaryAttribute(null=True, legacy_encoding=False)
    issuer = UnicodeAttribute(null=True)
    iss_parameter_supported = BooleanAttribute(default=False)
    authorization_url = UnicodeAttribute(null=True)
    token_url = UnicodeAttribute()
    revocation_url = UnicodeAttribute(null=True)
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
    due_shard = UnicodeAttribute(null=True)
    due_at = UTCDateTimeAttribute(null=True)
    due_index = DueIndex()
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    version = VersionAttribute()

    @classmethod
    def key_for(cls, tenant_id: str, connection_id: str) -> tuple[str, str]:
        return tenant_key(tenant_id), f"{CONNECTION_PREFIX}{connection_id}"


class ConnectionNameRecord(_TableModel):
    connection_id = UnicodeAttribute()


class FlowRecord(_TableModel):
    """One authorization flow, from "Connect" to the callback; short-lived (TTL) and single-use.

    Two items per flow: pk=FLOW#<hash of the redirect handle> while the browser has not been sent to
    the provider, then pk=STATE#<hash of state> until the callback consumes it. Only hashes of the
    handle, the state and the binding cookie are stored; the PKCE verifier is stored encrypted.
    """

    tenant_id = UnicodeAttribute()
    connection_id = UnicodeAttribute()
    return_url = UnicodeAttribute()
    redirect_uri = UnicodeAttribute()
    status = UnicodeAttribute()  # created -> redirected -> consumed
    cookie_hash = UnicodeAttribute(null=True)
    code_verifier_ciphertext = BinaryAttribute(null=True, legacy_encoding=False)
    # The connection's grant settings when the flow started (grants.fingerprint): an edit since refuses it.
    grant_fingerprint = UnicodeAttribute(null=True)
    expires_at = UTCDateTimeAttribute()
    expires_at_epoch = TTLAttribute()


class FeedDueIndex(GlobalSecondaryIndex["FeedRecord"]):  # type: ignore[no-untyped-call]
    """The same sparse DueIndex, seen from feeds (their shards are FEED#nnn)."""

    class Meta:
        index_name = "DueIndex"
        projection = KeysOnlyProjection()

    due_shard = UnicodeAttribute(hash_key=True)
    due_at = UTCDateTimeAttribute(range_key=True)


class FeedRecord(_TableModel):
    """A tenant's product feed: pk=TENANT#<tenant>, sk=FEED#<id>; in the DueIndex under FEED shards."""

    tenant_id = UnicodeAttribute()
    feed_id = UnicodeAttribute()
    name = UnicodeAttribute()
    url = UnicodeAttribute()
    connection_id = UnicodeAttribute(null=True)
    schedule = UnicodeAttribute()  # "rate:<minutes>" or "cron:<expression>"
    format = UnicodeAttribute()
    enabled = BooleanAttribute(default=True)
    next_run_at = UTCDateTimeAttribute(null=True)
    due_shard = UnicodeAttribute(null=True)
    due_at = UTCDateTimeAttribute(null=True)
    due_index = FeedDueIndex()
    etag = UnicodeAttribute(null=True)
    last_modified = UnicodeAttribute(null=True)
    last_run_id = UnicodeAttribute(null=True)
    last_status = UnicodeAttribute(null=True)
    last_run_at = UTCDateTimeAttribute(null=True)
    last_good_key = UnicodeAttribute(null=True)
    last_good_version = UnicodeAttribute(null=True)
    last_good_at = UTCDateTimeAttribute(null=True)
    last_items = NumberAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    version = VersionAttribute()


class FeedRunRecord(_TableModel):
    """One fetch of a feed: pk=FEEDRUNS#<tenant>#<feed>, sk=RUN#<time-ordered id>; expires (TTL)."""

    tenant_id = UnicodeAttribute()
    feed_id = UnicodeAttribute()
    run_id = UnicodeAttribute()
    trigger = UnicodeAttribute()
    status = UnicodeAttribute()  # running | succeeded | not_modified | failed
    http_status = NumberAttribute(null=True)
    bytes = NumberAttribute(default=0)
    items = NumberAttribute(null=True)
    duration_ms = NumberAttribute(null=True)
    s3_key = UnicodeAttribute(null=True)
    s3_version = UnicodeAttribute(null=True)
    error_code = UnicodeAttribute(null=True)
    error_message = UnicodeAttribute(null=True)
    started_at = UTCDateTimeAttribute()
    finished_at = UTCDateTimeAttribute(null=True)
    expires_at_epoch = TTLAttribute()


MODELS: tuple[type[_TableModel], ...] = (
    ConnectionRecord,
    ConnectionNameRecord,
    FlowRecord,
    FeedRecord,
    FeedRunRecord,
)


class _Binding:
    table_name: ClassVar[str | None] = None
    limits: ClassVar[aws.CallLimits | None] = None
    # Each model's pynamodb connection per (table, limits): a call near the deadline switches to
    # shorter timeouts, the next invocation back, without building a client again.
    connections: ClassVar[dict[tuple[type[_TableModel], str, aws.CallLimits], Any]] = {}


def bind_table(table_name: str) -> None:
    """Point every model at the table, with the timeouts and attempts of aws.py; cheap when unchanged
    (called on each request path, so a call made near the invocation's deadline gets shorter timeouts)."""
    limits = aws.current_limits()
    if _Binding.table_name == table_name and _Binding.limits == limits:
        return
    for model in MODELS:
        meta: Any = model.Meta  # pynamodb adds the connection settings to Meta at class creation
        meta.table_name = table_name
        meta.connect_timeout_seconds = limits.connect_timeout
        meta.read_timeout_seconds = limits.read_timeout
        meta.max_retry_attempts = limits.max_attempts - 1  # pynamodb counts retries, not attempts
        connection = _Binding.connections.get((model, table_name, limits))
        if connection is None:
            model._connection = None
            connection = _Binding.connections[(model, table_name, limits)] = model._get_connection()
        model._connection = connection
    _Binding.table_name, _Binding.limits = table_name, limits


@cache
def _connection(limits: aws.CallLimits) -> Connection:
    return Connection(
        connect_timeout_seconds=limits.connect_timeout,
        read_timeout_seconds=limits.read_timeout,
        max_retry_attempts=limits.max_attempts - 1,
    )


def _transaction() -> TransactWrite:
    """A transaction whose retries (after a timeout, say) DynamoDB recognizes: a retried write that had
    already succeeded is not refused by its own conditions."""
    return TransactWrite(
        connection=_connection(_Binding.limits or aws.current_limits()), client_request_token=uuid.uuid4().hex
    )


def _cancellation_codes(error: TransactWriteError) -> list[str]:
    return [reason.code if reason else "None" for reason in (error.cancellation_reasons or [])]


# ------------------------------------------------------------------ connections


def new_connection_record(tenant_id: str, connection_id: str, **attributes: Any) -> ConnectionRecord:
    pk, sk = ConnectionRecord.key_for(tenant_id, connection_id)
    now = utcnow()
    return ConnectionRecord(
        pk, sk, tenant_id=tenant_id, connection_id=connection_id, created_at=now, updated_at=now, **attributes
    )


def insert_connection(record: ConnectionRecord) -> None:
    """Insert a new connection and claim its name in one transaction."""
    name_item = ConnectionNameRecord(record.pk, name_key(record.name), connection_id=record.connection_id)
    try:
        with _transaction() as transaction:
            transaction.save(record, condition=ConnectionRecord.pk.does_not_exist())
            transaction.save(name_item, condition=ConnectionNameRecord.pk.does_not_exist())
    except TransactWriteError as error:
        codes = _cancellation_codes(error)
        if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
            raise ConflictError(f"a connection named {record.name!r} exists", code="name_taken") from error
        raise


def load_connection(tenant_id: str, connection_id: str, *, consistent: bool = False) -> ConnectionRecord:
    try:
        return ConnectionRecord.get(*ConnectionRecord.key_for(tenant_id, connection_id), consistent_read=consistent)
    except ConnectionRecord.DoesNotExist as error:
        raise NotFoundError("connection not found") from error


def page_connections(tenant_id: str, limit: int, after_id: str | None) -> tuple[list[ConnectionRecord], str | None]:
    """One page of a tenant's connections in creation order, and the id to continue after (or None)."""
    pk = tenant_key(tenant_id)
    start = {"pk": {"S": pk}, "sk": {"S": f"{CONNECTION_PREFIX}{after_id}"}} if after_id else None
    result = ConnectionRecord.query(
        pk,
        ConnectionRecord.sk.startswith(CONNECTION_PREFIX),
        limit=limit + 1,
        last_evaluated_key=start,
        page_size=limit + 1,
    )
    items, more = _one_page(result, limit)
    return items, items[-1].sk.removeprefix(CONNECTION_PREFIX) if more else None


def _one_page[T](result: Iterable[T], limit: int) -> tuple[list[T], bool]:
    """The first ``limit`` items and whether more exist. Queries ask for one item more than a page:
    DynamoDB returns a LastEvaluatedKey whenever a page is full, even when nothing follows."""
    items = list(result)
    return items[:limit], len(items) > limit


def save_connection(record: ConnectionRecord, *, old_name: str | None = None) -> None:
    """Write back a changed connection, refused if another writer changed it first (version check).

    A rename moves the unique name claim in the same transaction.
    """
    record.updated_at = utcnow()
    try:
        if old_name is None or name_key(old_name) == name_key(record.name):
            record.save()
            return
        with _transaction() as transaction:
            transaction.save(record)
            transaction.delete(ConnectionNameRecord(record.pk, name_key(old_name)))
            transaction.save(
                ConnectionNameRecord(record.pk, name_key(record.name), connection_id=record.connection_id),
                condition=ConnectionNameRecord.pk.does_not_exist(),
            )
    except PutError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            raise ConflictError("the connection was changed concurrently", code="stale_update") from error
        raise
    except TransactWriteError as error:
        codes = _cancellation_codes(error)
        if codes and codes[0] == "ConditionalCheckFailed":
            raise ConflictError("the connection was changed concurrently", code="stale_update") from error
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
        with _transaction() as transaction:
            transaction.delete(record, condition=condition, add_version_condition=guarded)
            transaction.delete(ConnectionNameRecord(record.pk, name_key(record.name)))
    except TransactWriteError as error:
        if _cancellation_codes(error)[:1] == ["ConditionalCheckFailed"]:
            raise ConflictError("the connection was changed concurrently", code="stale_update") from error
        raise


# ------------------------------------------------------------------ authorization flows


def insert_flow(record: FlowRecord) -> None:
    record.save(condition=FlowRecord.pk.does_not_exist())


def load_flow(pk: str) -> FlowRecord | None:
    try:
        return FlowRecord.get(pk, FLOW_SORT_KEY, consistent_read=True)
    except FlowRecord.DoesNotExist:
        return None


def advance_flow(started: FlowRecord, redirected: FlowRecord) -> bool:
    """Use a redirect handle once: mark it used and create the state item, atomically."""
    try:
        with _transaction() as transaction:
            transaction.update(
                started,
                actions=[FlowRecord.status.set("redirected")],
                condition=(FlowRecord.status == "created") & (FlowRecord.expires_at > utcnow()),
            )
            transaction.save(redirected, condition=FlowRecord.pk.does_not_exist())
    except TransactWriteError as error:
        if "ConditionalCheckFailed" in _cancellation_codes(error):
            return False
        raise
    return True


def consume_flow(record: FlowRecord) -> bool:
    """Use a state once: True for the one caller that consumed it, False for any replay."""
    from pynamodb.exceptions import UpdateError

    try:
        record.update(
            actions=[FlowRecord.status.set("consumed")],
            condition=(FlowRecord.status == "redirected") & (FlowRecord.expires_at > utcnow()),
        )
    except UpdateError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


# ------------------------------------------------------------------ token refresh


def _conditional_update(record: ConnectionRecord, actions: list[Any], condition: Any) -> bool:
    """An UpdateItem with our own condition instead of the settings version (which it still bumps)."""
    from pynamodb.exceptions import UpdateError

    try:
        record.update(actions=actions, condition=condition, add_version_condition=False)
    except UpdateError as error:
        # Read the cause's code directly: pynamodb's cause_response_code fails on a connection error.
        response = getattr(error.cause, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def acquire_lease(record: ConnectionRecord, owner: str, until: datetime) -> bool:
    """Take the refresh lease if nobody holds an unexpired one and the tokens are still the ones read."""
    now = utcnow()
    free = ConnectionRecord.lease_expires_at.does_not_exist() | (ConnectionRecord.lease_expires_at < now)
    return _conditional_update(
        record,
        [ConnectionRecord.lease_owner.set(owner), ConnectionRecord.lease_expires_at.set(until)],
        ConnectionRecord.pk.exists() & free & (ConnectionRecord.token_version == record.token_version),
    )


def store_refreshed(record: ConnectionRecord, owner: str, seen_token_version: int, actions: list[Any]) -> bool:
    """Write the result of a refresh and release the lease, only while the lease is still ours.

    Refused when the lease expired or passed to another holder, or newer tokens were stored: a holder
    that overran its lease must not overwrite a newer outcome.
    """
    return _conditional_update(
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
    return _conditional_update(
        record,
        [
            ConnectionRecord.recovered_tokens_ciphertext.set(ciphertext),
            ConnectionRecord.recovered_after_version.set(seen_token_version),
        ],
        ConnectionRecord.pk.exists() & (ConnectionRecord.token_version == seen_token_version),
    )


def release_lease(record: ConnectionRecord, owner: str, actions: list[Any]) -> bool:
    """Record the outcome of a failed refresh and release our lease (if it is still ours)."""
    return _conditional_update(
        record,
        [*actions, ConnectionRecord.lease_owner.remove(), ConnectionRecord.lease_expires_at.remove()],
        ConnectionRecord.pk.exists() & (ConnectionRecord.lease_owner == owner),
    )


def due_page(
    shard: str, until: datetime, limit: int, start: dict[str, Any] | None
) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
    """One page of (tenant_id, connection_id) due in a shard by `until`, and where to continue."""
    result = ConnectionRecord.due_index.query(
        shard, ConnectionRecord.due_at <= until, limit=limit, page_size=limit, last_evaluated_key=start
    )
    keys = [(item.pk.removeprefix(TENANT_PREFIX), item.sk.removeprefix(CONNECTION_PREFIX)) for item in result]
    return keys, result.last_evaluated_key


# ------------------------------------------------------------------ feeds


def due_feeds_page(
    shard: str, until: datetime, limit: int, start: dict[str, Any] | None
) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
    """One page of (tenant_id, feed_id) due in a feed shard by `until`, and where to continue."""
    result = FeedRecord.due_index.query(
        shard, FeedRecord.due_at <= until, limit=limit, page_size=limit, last_evaluated_key=start
    )
    keys = [(item.pk.removeprefix(TENANT_PREFIX), item.sk.removeprefix(FEED_PREFIX)) for item in result]
    return keys, result.last_evaluated_key


def feed_key(tenant_id: str, feed_id: str) -> tuple[str, str]:
    return tenant_key(tenant_id), f"{FEED_PREFIX}{feed_id}"


def load_feed(tenant_id: str, feed_id: str, *, consistent: bool = False) -> FeedRecord:
    try:
        return FeedRecord.get(*feed_key(tenant_id, feed_id), consistent_read=consistent)
    except FeedRecord.DoesNotExist as error:
        raise NotFoundError("feed not found") from error


def insert_feed(record: FeedRecord) -> None:
    record.save(condition=FeedRecord.pk.does_not_exist())


def save_feed(record: FeedRecord) -> None:
    record.updated_at = utcnow()
    try:
        record.save()
    except PutError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            raise ConflictError("the feed was changed concurrently", code="stale_update") from error
        raise


def update_feed(record: FeedRecord, actions: list[Any]) -> bool:
    """Record a run's outcome on the feed without touching its settings (last writer of these fields wins).

    False if the feed was deleted meanwhile: an update never brings back a fragment of a deleted feed.
    """
    from pynamodb.exceptions import UpdateError

    try:
        record.update(
            actions=[*actions, FeedRecord.updated_at.set(utcnow())],
            condition=FeedRecord.pk.exists(),
            add_version_condition=False,
        )
    except UpdateError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def delete_feed(record: FeedRecord) -> None:
    try:
        record.delete()
    except DeleteError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            raise ConflictError("the feed was changed concurrently", code="stale_update") from error
        raise


def page_feeds(tenant_id: str, limit: int, after_id: str | None) -> tuple[list[FeedRecord], str | None]:
    pk = tenant_key(tenant_id)
    start = {"pk": {"S": pk}, "sk": {"S": f"{FEED_PREFIX}{after_id}"}} if after_id else None
    result = FeedRecord.query(
        pk, FeedRecord.sk.startswith(FEED_PREFIX), limit=limit + 1, last_evaluated_key=start, page_size=limit + 1
    )
    items, more = _one_page(result, limit)
    return items, items[-1].sk.removeprefix(FEED_PREFIX) if more else None


def runs_key(tenant_id: str, feed_id: str) -> str:
    return f"{FEED_RUNS_PREFIX}{tenant_id}#{feed_id}"


def save_run(record: FeedRunRecord) -> None:
    record.save()


def latest_runs(tenant_id: str, feed_id: str, limit: int) -> list[FeedRunRecord]:
    return list(
        FeedRunRecord.query(
            runs_key(tenant_id, feed_id), FeedRunRecord.sk.startswith(RUN_PREFIX), scan_index_forward=False, limit=limit
        )
    )
