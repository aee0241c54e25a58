"""Authorization-flow items and their single-use transitions."""

from __future__ import annotations

from pynamodb.attributes import (
    BinaryAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import TransactWriteError

from oauth_connections.core.clock import utcnow
from oauth_connections.storage.table import TableModel, cancellation_codes, conditional_update, new_transaction

FLOW_PREFIX = "FLOW#"


STATE_PREFIX = "STATE#"


FLOW_SORT_KEY = "FLOW"


class FlowRecord(TableModel):
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
    display = UnicodeAttribute(default="page")  # page | popup: how the callback answers the browser
    cookie_hash = UnicodeAttribute(null=True)
    code_verifier_ciphertext = BinaryAttribute(null=True, legacy_encoding=False)
    # The connection's grant settings when the flow started (grants.fingerprint): an edit since refuses it.
    grant_fingerprint = UnicodeAttribute(null=True)
    # The user who started the flow, for the activity log's "connected" entry (the callback has no bearer token).
    user_id = UnicodeAttribute(null=True)
    expires_at = UTCDateTimeAttribute()
    expires_at_epoch = TTLAttribute()


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
        with new_transaction() as transaction:
            transaction.update(
                started,
                actions=[FlowRecord.status.set("redirected")],
                condition=(FlowRecord.status == "created") & (FlowRecord.expires_at > utcnow()),
            )
            transaction.save(redirected, condition=FlowRecord.pk.does_not_exist())
    except TransactWriteError as error:
        if "ConditionalCheckFailed" in cancellation_codes(error):
            return False
        raise
    return True


def consume_flow(record: FlowRecord) -> bool:
    """Use a state once: True for the one caller that consumed it, False for any replay."""
    return conditional_update(
        record,
        [FlowRecord.status.set("consumed")],
        (FlowRecord.status == "redirected") & (FlowRecord.expires_at > utcnow()),
    )
