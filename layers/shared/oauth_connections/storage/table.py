"""The one table every item lives in: the base of the item models, the tenant key, the due index and
transactions.

One table (template.yaml: ConnectionsTable), keys `pk`/`sk`:
- a connection:            pk=TENANT#<tenant>  sk=CONNECTION#<connection id>
- its unique name:         pk=TENANT#<tenant>  sk=NAME#<case-folded name>
Every key of a tenant's items starts with the tenant, so a tenant's request can only ever address its
own items. Secrets and tokens are stored as envelope ciphertext only (see security/crypto.py).
"""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any, ClassVar

from pynamodb.attributes import UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.connection import Connection, TableConnection
from pynamodb.connection.base import BOTOCORE_EXCEPTIONS
from pynamodb.constants import ALL_NEW, ALL_OLD, ATTRIBUTES, UPDATE_ITEM
from pynamodb.exceptions import PynamoDBException, TransactWriteError, UpdateError
from pynamodb.indexes import GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from oauth_connections.core import aws

TENANT_PREFIX = "TENANT#"


def tenant_key(tenant_id: str) -> str:
    return f"{TENANT_PREFIX}{tenant_id}"


class DueIndex(GlobalSecondaryIndex[Any]):  # type: ignore[no-untyped-call]
    """Sparse, sharded index of what has work due, by when: connections to refresh (shards DUE#nnn) and feeds to
    run (shards FEED#nnn). Only items with something to do carry `due_shard`/`due_at`; a sweep queries each
    shard for `due_at <= now`, never scanning the table. Each model holds its own instance, which pynamodb
    binds to that model."""

    class Meta:
        index_name = "DueIndex"
        projection = KeysOnlyProjection()

    due_shard = UnicodeAttribute(hash_key=True)
    due_at = UTCDateTimeAttribute(range_key=True)


class TableModel(Model):
    """Base of the items of the connections table; the table name is bound at run time (bind_table)."""

    class Meta:
        table_name = "unbound"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)

    @classmethod
    def _get_connection(cls) -> TableConnection:
        """pynamodb's connection of the model, on the one DynamoDB client of its call limits.

        pynamodb gives each model's connection its own botocore session and client; every model is bound
        at once (bind_table), and each session registers some 700 event handlers (over 10 ms) and each
        client its own HTTP pool and TLS connections. Every model of the table uses the same service with
        the same settings, so they share one client (and its session) per limits, with the transactions'.
        """
        connection = super()._get_connection()
        own = connection.connection
        if own._client is None:
            shared = _connection(_meta_limits(cls.Meta))
            own._local.session = shared.session  # pynamodb keeps a session per thread; this one is this thread's
            own._client = shared.client
        return connection


def _meta_limits(meta: Any) -> aws.CallLimits:
    """The call limits that a model's pynamodb connection settings (bind_table sets them) stand for."""
    return aws.CallLimits(
        connect_timeout=float(meta.connect_timeout_seconds),
        read_timeout=float(meta.read_timeout_seconds),
        max_attempts=int(meta.max_retry_attempts) + 1,
    )


class _Binding:
    table_name: ClassVar[str | None] = None
    limits: ClassVar[aws.CallLimits | None] = None
    # Each model's pynamodb connection per (table, limits): a call near the deadline switches to
    # shorter timeouts, the next invocation back, without building a client again.
    connections: ClassVar[dict[tuple[type[TableModel], str, aws.CallLimits], Any]] = {}


@cache
def _connection(limits: aws.CallLimits) -> Connection:
    connection = Connection(
        connect_timeout_seconds=limits.connect_timeout,
        read_timeout_seconds=limits.read_timeout,
        max_retry_attempts=limits.max_attempts - 1,
    )
    aws.share_sdk_models(connection.session)
    return connection


def new_transaction() -> TransactWrite:
    """A transaction whose retries (after a timeout, say) DynamoDB recognizes: a retried write that had
    already succeeded is not refused by its own conditions."""
    return TransactWrite(
        connection=_connection(_Binding.limits or aws.current_limits()), client_request_token=uuid.uuid4().hex
    )


def cancellation_codes(error: TransactWriteError) -> list[str]:
    return [reason.code if reason else "None" for reason in (error.cancellation_reasons or [])]


def condition_failed(error: PynamoDBException) -> bool:
    """Whether a write was refused by its condition. Read from the cause itself: pynamodb's
    cause_response_code fails on a connection error, which has no response."""
    response = getattr(error.cause, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def conditional_update(record: TableModel, actions: list[Any], condition: Any) -> bool:
    """An UpdateItem under our own condition instead of the item's version (which it still bumps);
    False when the condition refused it."""
    try:
        record.update(actions=actions, condition=condition, add_version_condition=False)
    except UpdateError as error:
        if condition_failed(error):
            return False
        raise
    return True


def update_or_current[M: TableModel](
    model: type[M], key: tuple[str, str], actions: list[Any], condition: Any
) -> tuple[M | None, bool]:
    """An UpdateItem of the item at `key` under our own condition, which returns the item either way: as
    written and True, or as the condition found it and False (None: there is no such item).

    The refused item comes with the refusal (ReturnValuesOnConditionCheckFailure=ALL_OLD, which pynamodb's
    update does not ask for), so telling why a write was refused costs no read. `actions` must move the
    item's version themselves: there is no read version to count from.
    """
    table = model._get_connection()
    connection = table.connection
    request = connection.get_operation_kwargs(
        table.table_name,
        key[0],
        range_key=key[1],
        actions=actions,
        condition=condition,
        return_values=ALL_NEW,
        return_values_on_condition_failure=ALL_OLD,
    )
    try:
        written = connection.client._make_api_call(UPDATE_ITEM, request)  # as pynamodb's own calls
    except BOTOCORE_EXCEPTIONS as error:
        failure = UpdateError(f"Failed to update item: {error}", error)
        if not condition_failed(failure):
            raise failure from error
        current = getattr(error, "response", {}).get("Item")
        return (model.from_raw_data(current) if current else None), False
    return model.from_raw_data(written[ATTRIBUTES]), True
