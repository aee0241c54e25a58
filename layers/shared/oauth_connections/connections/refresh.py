"""Single-flight token refresh, shared by GetTokenFunction and the scheduled refresh.

Rotating refresh tokens make a concurrent refresh fatal: the provider sees the old refresh token used
twice, answers invalid_grant and revokes the grant. So exactly one caller, across every Lambda instance,
talks to the provider per rotation: it takes a lease on the connection item (a conditional write with
an owner and an expiry), refreshes, and stores the new tokens with a condition on still holding the
lease and on the token version, before anyone sees the new access token. Everyone else waits, bounded,
and reads the result. A holder that dies leaves a lease that expires, and the next caller takes over.

Once the provider answered, its refresh token may be the only valid one: a failing store is retried
within the lease, and if storage is still failing, the tokens are kept encrypted on the item
(`recovered_tokens_ciphertext`), where the next holder adopts them instead of calling the provider.
A lease is only taken with the time to use it (core/budget.py), and the provider call ends before the lease.

Failures are classified: a permanent OAuth error makes the connection `reauthorization_required`;
anything transient keeps the tokens and sets a cooldown (exponential backoff with jitter, honouring
Retry-After), so a failing provider is not hammered by every caller.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, cast

from aws_lambda_powertools.metrics import MetricUnit

from oauth_connections.connections import activity, refresh_schedule, tokens
from oauth_connections.core import aws, budget, events
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import Settings
from oauth_connections.core.errors import DecryptionError, ServiceError
from oauth_connections.core.observability import logger, metrics
from oauth_connections.oauth import token_endpoint
from oauth_connections.security.crypto import KeyUnavailableError
from oauth_connections.security.policy import url_policy
from oauth_connections.storage.connections import (
    CONNECTIONS,
    ConnectionRecord,
    acquire_lease,
    release_lease,
    store_recovery,
    store_refreshed,
)


class TokenError(ServiceError):
    """A retrieval or refresh that cannot give a token; the codes are GetTokenFunction's contract."""

    STATUS_BY_CODE: ClassVar[dict[str, int]] = {
        "invalid_request": 400,
        "not_found": 404,
        "not_connected": 409,
        "reauthorization_required": 409,
        "provider_unavailable": 503,
    }

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.status = self.STATUS_BY_CODE.get(code, 500)


@dataclass(frozen=True)
class Refreshed:
    record: ConnectionRecord
    tokens: token_endpoint.TokenSet


def backoff_seconds(settings: Settings, failures: int, retry_after: int | None) -> int:
    """Exponential backoff with full jitter above half the step, never sooner than Retry-After."""
    step = min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** max(0, failures - 1))
    delay = int(step / 2 + random.random() * step / 2)  # noqa: S311 - jitter, not security
    return max(delay, retry_after or 0, 1)


def _seconds_until(moment: datetime | None) -> int:
    return max(1, int((moment - utcnow()).total_seconds()) + 1) if moment else 1


def cooldown_error(record: ConnectionRecord) -> TokenError | None:
    if record.next_attempt_at and record.next_attempt_at > utcnow():
        return TokenError(
            "provider_unavailable",
            "the provider failed recently; not retrying before the cooldown ends",
            retry_after=_seconds_until(record.next_attempt_at),
        )
    return None


# Time a holder keeps after the provider's answer for storing it (and retrying the store).
STORE_RESERVE_SECONDS = 2.0
# A provider call shorter than this is not worth a lease.
MIN_PROVIDER_SECONDS = 1.0
STORE_ATTEMPTS = 5
RECOVERY_ATTEMPTS = 20
FIRST_STORE_PAUSE_SECONDS = 0.1
MAX_STORE_PAUSE_SECONDS = 1.0
# Kept tokens whose access token expires sooner are refreshed (with their refresh token), not handed out.
RECOVERED_MIN_VALID_SECONDS = 60


def holder_seconds_needed(settings: Settings) -> float:
    """What a full refresh may take: the provider's deadline plus the store."""
    return settings.outbound_timeout_seconds + STORE_RESERVE_SECONDS


def refresh_connection(
    settings: Settings,
    record: ConnectionRecord,
    *,
    reason: str,
    wait: bool = True,
    retry_refused: bool = False,
    actor: str | None = None,
) -> Refreshed:
    """Refresh the connection's tokens, or wait for whoever is already doing it (unless `wait` is off).

    `retry_refused` tries once more a connection the provider refused (a new client secret may fix it).
    `actor` is the user who asked, for the activity log.
    """
    deadline = time.monotonic() + budget.bounded(settings.refresh_wait_seconds, reserve=1.0)
    seen = int(record.token_version or 0)
    pause = 0.05
    while True:
        refused = _refusal(record, retry_refused=retry_refused)
        if refused:
            raise refused
        if int(record.token_version or 0) != seen:
            current = tokens.decrypt_tokens(settings, record)
            if current is not None:
                return Refreshed(record, current)
        cooling = cooldown_error(record)
        if cooling:
            raise cooling
        lease = new_lease(settings)
        if lease is None:
            raise TokenError("provider_unavailable", "no time left in this invocation to refresh", retry_after=1)
        if acquire_lease(record, lease.owner, lease.until):
            return _refresh_as_holder(settings, record, lease, seen, reason, actor)
        if not wait or time.monotonic() >= deadline:
            raise _held_elsewhere()
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)
        record = CONNECTIONS.load(record.tenant_id, record.connection_id, consistent=True)


def refresh_leased(settings: Settings, record: ConnectionRecord, lease: Lease, *, reason: str) -> Refreshed:
    """Refresh a connection whose lease was taken by the write that read it (the scheduled refresh).

    The checks refresh_connection makes before taking a lease apply to that record; one that refuses
    gives the lease back before the refusal is the outcome.
    """
    refused = _refusal(record) or cooldown_error(record)
    if refused:
        release_lease(record, lease.owner, [])
        raise refused
    return _refresh_as_holder(settings, record, lease, int(record.token_version or 0), reason, None)


def refusal_while_held(record: ConnectionRecord) -> TokenError:
    """What a caller that does not wait gets for `record` while someone else holds its lease: the refusal
    refresh_connection would have met before trying the lease, else that a refresh is in progress."""
    return _refusal(record) or cooldown_error(record) or _held_elsewhere()


def _refusal(record: ConnectionRecord, *, retry_refused: bool = False) -> TokenError | None:
    if record.status == "reauthorization_required" and not retry_refused:
        return TokenError("reauthorization_required", "the connection must be authorized again")
    if cast(bytes | None, record.tokens_ciphertext) is None:  # an edit ended the grant (while we waited)
        return TokenError("not_connected", "the connection has not been authorized yet")
    return None


def _held_elsewhere() -> TokenError:
    return TokenError("provider_unavailable", "another refresh is still in progress", retry_after=1)


@dataclass(frozen=True)
class Lease:
    owner: str
    until: datetime

    def seconds_left(self) -> float:
        """Time left to use the lease, also bounded by the invocation's own deadline."""
        return budget.bounded((self.until - utcnow()).total_seconds())


def new_lease(settings: Settings) -> Lease | None:
    """A lease to take now, as long as this invocation can use it; None when that is too short to refresh
    (taking it would leave it held by an invocation about to be stopped)."""
    lease_seconds = budget.bounded(float(settings.refresh_lease_seconds))
    if lease_seconds < MIN_PROVIDER_SECONDS + STORE_RESERVE_SECONDS:
        return None
    return Lease(uuid.uuid4().hex, utcnow() + timedelta(seconds=lease_seconds))


def _refresh_as_holder(
    settings: Settings, record: ConnectionRecord, lease: Lease, seen: int, reason: str, actor: str | None
) -> Refreshed:
    context = {"tenant_id": record.tenant_id, "connection_id": record.connection_id, "reason": reason}
    started = time.monotonic()
    was_error = record.status == "error"
    was_failing = was_error or int(record.consecutive_failures or 0) > 0
    try:
        recovered = _recovered_tokens(settings, record, seen)
        if recovered is not None and _still_valid(recovered):
            logger.warning("adopting refreshed tokens a previous holder could not store", extra=context)
            fresh = recovered
        else:
            fresh = _ask_provider(settings, record, lease, seen, recovered)
    except TokenError as error:
        _record_failure_activity(settings, record, reason, actor, error)
        _record_became_error(settings, record, reason, actor, was_error=was_error)
        raise
    except Exception as error:
        # Before the provider answered nothing is lost: release the lease, back off, and let the boundary report.
        _release_after_unexpected(settings, record, lease.owner, error)
        _record_became_error(settings, record, reason, actor, was_error=was_error)
        raise
    stored = _store_fresh(settings, record, lease, seen, fresh, context)
    if stored is not None:
        return stored
    logger.info("tokens refreshed", extra=context | {"duration_ms": int((time.monotonic() - started) * 1000)})
    _migrate_client_secret(settings, record, context)
    _announce_success(settings, record, reason, actor, was_failing=was_failing)
    return Refreshed(record, fresh)


def _migrate_client_secret(settings: Settings, record: ConnectionRecord, context: dict[str, str]) -> None:
    """A client secret of the older format joins the new tokens' key; failing that, it stays as it is."""
    try:
        if tokens.migrate_client_secret(settings, record):
            logger.info("client secret sealed under the connection key", extra=context)
    except Exception as error:  # noqa: BLE001 - the tokens are stored; the secret still opens as it is
        logger.warning("client secret not migrated", extra=context | {"error": _describe(error)})


# The status each outcome's event reports; None: the status the failure left stored.
_EVENT_STATUS: dict[str, str | None] = {
    "connection.refreshed": "connected",
    "connection.recovered": "connected",
    "connection.reauthorization_required": "reauthorization_required",
    "connection.refresh_failed": None,
    "connection.error": "error",
}


@dataclass(frozen=True)
class _Entry:
    """An outcome's activity entry: what asked for the refresh (its reason), the user who did, and details."""

    asked_by: str
    actor: str | None
    details: dict[str, Any] = field(default_factory=dict)


def _announce(
    settings: Settings,
    record: ConnectionRecord,
    kind: str,
    /,
    *,
    entry: _Entry | None = None,
    event: dict[str, Any] | None = None,
) -> None:
    """An outcome of a refresh, under one name in the activity log and on EventBridge: the entry, then the event.

    A call writes only the parts given: an outcome that changes the stored status publishes its event as
    soon as the status is stored, and records its entry once the failure reaches `_refresh_as_holder`.
    """
    if entry is not None:
        activity.record_refresh(
            settings, record.tenant_id, record.connection_id, kind, entry.asked_by, entry.actor, **entry.details
        )
    if event is not None:
        events.publish(
            settings.event_bus_name,
            kind,
            tenant_id=record.tenant_id,
            connection_id=record.connection_id,
            status=_EVENT_STATUS[kind] or record.status,
            **event,
        )


def _announce_success(
    settings: Settings, record: ConnectionRecord, reason: str, actor: str | None, *, was_failing: bool
) -> None:
    """A successful scheduled refresh is routine and not logged one by one (the connection's refreshed_at
    tells the last); every other refresh is. A connection that was failing and works again recovered."""
    if reason != "scheduled":
        _announce(
            settings, record, "connection.refreshed", entry=_Entry(reason, actor, {"expires_at": record.expires_at})
        )
    if was_failing:
        _announce(settings, record, "connection.recovered", entry=_Entry(reason, actor), event={"reason": reason})
    if settings.publish_refreshed_events:
        _announce(settings, record, "connection.refreshed", event={"reason": reason})


def _record_failure_activity(
    settings: Settings, record: ConnectionRecord, reason: str, actor: str | None, error: TokenError
) -> None:
    """The failure the provider's answer left on the connection: why, and when it is tried again."""
    cause = error.__cause__
    why = str(getattr(cause, "error", None) or getattr(cause, "message", None) or error.code)[:200]
    if record.status == "reauthorization_required":
        _announce(settings, record, "connection.reauthorization_required", entry=_Entry(reason, actor, {"reason": why}))
    else:
        details = {"reason": why, "next_attempt_at": record.next_attempt_at}
        _announce(settings, record, "connection.refresh_failed", entry=_Entry(reason, actor, details))


def _record_became_error(
    settings: Settings, record: ConnectionRecord, reason: str, actor: str | None, *, was_error: bool
) -> None:
    """A status change is never summarized away: the failure that made the connection `error` (the stored
    outcome, read back by the failure's write) is an entry of its own, once."""
    if record.status == "error" and not was_error:
        details = {"reason": record.status_reason, "failing_since": record.failing_since}
        _announce(settings, record, "connection.error", entry=_Entry(reason, actor, details))


def _recovered_tokens(settings: Settings, record: ConnectionRecord, seen: int) -> token_endpoint.TokenSet | None:
    """Tokens a previous holder got but could not store, if they follow the tokens this caller read."""
    if int(record.token_version or 0) != seen:
        return None
    try:
        return tokens.recovered_tokens(settings, record)
    except KeyUnavailableError:
        raise  # KMS is failing: an unexpected error, not a reason to use the rotated-away refresh token
    except DecryptionError as error:
        logger.error(
            "kept tokens do not decrypt; ignored",
            extra={"connection_id": record.connection_id, "reason": error.message},
        )
        return None


def _still_valid(token_set: token_endpoint.TokenSet) -> bool:
    return token_set.expires_at is None or token_set.expires_at - time.time() > RECOVERED_MIN_VALID_SECONDS


def _ask_provider(
    settings: Settings, record: ConnectionRecord, lease: Lease, seen: int, recovered: token_endpoint.TokenSet | None
) -> token_endpoint.TokenSet:
    current = recovered or tokens.decrypt_tokens(settings, record)
    client = tokens.client_settings(settings, record)
    timeout = max(0.0, min(settings.outbound_timeout_seconds, lease.seconds_left() - STORE_RESERVE_SECONDS))
    try:
        if record.grant_type == "client_credentials":
            return token_endpoint.client_credentials(client, policy=url_policy(), timeout=timeout)
        if current is None:
            raise token_endpoint.ProviderRejectedError("invalid_grant", "the connection has no tokens")
        return token_endpoint.refresh(client, current, policy=url_policy(), timeout=timeout)
    except token_endpoint.ProviderRejectedError as error:
        if error.permanent:
            kept = None if recovered else _recovered_meanwhile(settings, record, seen)
            if kept is not None:
                # Our refresh token was already rotated by a holder whose store failed: theirs is the grant.
                return kept
            _mark_reauthorization_required(settings, record, lease.owner, error.error)
            raise TokenError("reauthorization_required", "the provider refused the refresh token") from error
        _record_transient_failure(settings, record, lease.owner, f"provider answered {error.error}", None)
        raise TokenError(
            "provider_unavailable",
            "the provider refused the refresh for now",
            retry_after=_seconds_until(record.next_attempt_at),
        ) from error
    except token_endpoint.ProviderUnavailableError as error:
        _record_transient_failure(settings, record, lease.owner, error.message, error.retry_after)
        raise TokenError(
            "provider_unavailable", error.message, retry_after=_seconds_until(record.next_attempt_at)
        ) from error


def _recovered_meanwhile(settings: Settings, record: ConnectionRecord, seen: int) -> token_endpoint.TokenSet | None:
    latest = CONNECTIONS.load(record.tenant_id, record.connection_id, consistent=True)
    return _recovered_tokens(settings, latest, seen)


def _release_after_unexpected(settings: Settings, record: ConnectionRecord, owner: str, error: Exception) -> None:
    """Free the lease; a fault of ours also backs off, but AWS being slow or throttled is nobody's failure
    to record on the connection (its status, backoff and due time stay as they were)."""
    try:
        if aws.unavailable_error(error) is not None:
            release_lease(record, owner, [])
            return
        _record_transient_failure(settings, record, owner, f"refresh failed: {type(error).__name__}", None)
    except Exception:  # noqa: BLE001 - the original error is raised by the caller; the lease expires anyway
        logger.exception("could not release the refresh lease", extra={"connection_id": record.connection_id})


def _fresh_actions(
    settings: Settings, record: ConnectionRecord, seen: int, fresh: token_endpoint.TokenSet
) -> list[Any]:
    record.token_version = seen  # apply_tokens counts from here, on every attempt
    tokens.apply_tokens(settings, record, fresh)
    now = utcnow()
    record.refreshed_at, record.status, record.next_attempt_at = now, "connected", None
    actions: list[Any] = [
        ConnectionRecord.tokens_ciphertext.set(record.tokens_ciphertext),
        ConnectionRecord.token_version.set(seen + 1),
        ConnectionRecord.has_refresh_token.set(record.has_refresh_token),
        ConnectionRecord.refreshed_at.set(now),
        ConnectionRecord.status.set("connected"),
        ConnectionRecord.consecutive_failures.set(0),
        ConnectionRecord.next_attempt_at.remove(),
        ConnectionRecord.failing_since.remove(),
        ConnectionRecord.status_reason.remove(),
        *refresh_schedule.apply_due(settings, record),
    ]
    actions.append(
        ConnectionRecord.expires_at.set(record.expires_at)
        if record.expires_at
        else ConnectionRecord.expires_at.remove()
    )
    actions.append(
        ConnectionRecord.metadata.set(record.metadata) if record.metadata else ConnectionRecord.metadata.remove()
    )
    actions.append(
        ConnectionRecord.granted_scopes.set(record.granted_scopes)
        if record.granted_scopes is not None
        else ConnectionRecord.granted_scopes.remove()
    )
    return actions


def _store_fresh(
    settings: Settings,
    record: ConnectionRecord,
    lease: Lease,
    seen: int,
    fresh: token_endpoint.TokenSet,
    context: dict[str, str],
) -> Refreshed | None:
    """Store what the provider answered; None when stored, else the outcome to return instead.

    The provider may have rotated the refresh token, so from here on nothing may lose it: the store is
    retried within the lease, and if it still fails the tokens are kept for the next holder.
    """
    failure: Exception | None = None
    pause = FIRST_STORE_PAUSE_SECONDS
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            stored = store_refreshed(record, lease.owner, seen, _fresh_actions(settings, record, seen, fresh))
        except Exception as error:  # noqa: BLE001 - any storage or KMS fault: retried, then kept for recovery
            failure = error
            logger.warning(
                "storing refreshed tokens failed", extra=context | {"attempt": attempt, "error": _describe(error)}
            )
        else:
            return None if stored else _after_refused_store(settings, record, seen, fresh, context)
        if attempt == STORE_ATTEMPTS or lease.seconds_left() < pause + STORE_RESERVE_SECONDS / 2:
            break
        time.sleep(pause)
        pause = min(pause * 2, MAX_STORE_PAUSE_SECONDS)
    _keep_for_recovery(settings, record, seen, fresh, context, failure)
    return Refreshed(record, fresh)


def _after_refused_store(
    settings: Settings, record: ConnectionRecord, seen: int, fresh: token_endpoint.TokenSet, context: dict[str, str]
) -> Refreshed:
    """Our lease ended before the store: newer tokens win; otherwise ours are kept for the next holder."""
    latest = CONNECTIONS.load(record.tenant_id, record.connection_id, consistent=True)
    if int(latest.token_version or 0) != seen:
        logger.error("refresh result superseded", extra=context)
        latest_tokens = tokens.decrypt_tokens(settings, latest)
        if latest_tokens is None:
            raise TokenError("not_connected", "the connection has no tokens")
        return Refreshed(latest, latest_tokens)
    logger.error("refresh lease expired before the store", extra=context)
    _keep_for_recovery(settings, latest, seen, fresh, context, None)
    return Refreshed(latest, fresh)


def _keep_for_recovery(
    settings: Settings,
    record: ConnectionRecord,
    seen: int,
    fresh: token_endpoint.TokenSet,
    context: dict[str, str],
    failure: Exception | None,
) -> None:
    """Write the refreshed tokens, encrypted, where the next lease holder adopts them; alarmed either way."""
    metrics.add_metric(name="RefreshStoreFailed", unit=MetricUnit.Count, value=1)
    pause = FIRST_STORE_PAUSE_SECONDS
    for attempt in range(1, RECOVERY_ATTEMPTS + 1):
        try:
            ciphertext = tokens.seal_tokens(settings, record, fresh)
            kept = store_recovery(record, seen, ciphertext)
        except Exception as error:  # noqa: BLE001 - retried within the invocation, then reported below
            failure = error
        else:
            if kept:
                logger.error(
                    "refreshed tokens kept for recovery by the next holder",
                    extra=context | {"error": _describe(failure)},
                )
            else:
                logger.error("refreshed tokens superseded by newer tokens before recovery", extra=context)
            return
        left = budget.remaining_seconds()
        if attempt == RECOVERY_ATTEMPTS or (left is not None and left < pause + 1.0):
            break
        time.sleep(pause)
        pause = min(pause * 2, MAX_STORE_PAUSE_SECONDS)
    metrics.add_metric(name="RefreshedTokensLost", unit=MetricUnit.Count, value=1)
    logger.error(
        "refreshed tokens could not be stored or kept; the grant may need a new authorization",
        extra=context | {"error": _describe(failure)},
    )


def _describe(error: Exception | None) -> str:
    """An error's class and its cause's AWS error code or class, never a message (which may quote a request)."""
    if error is None:
        return "lease expired"
    cause = getattr(error, "cause", None) or error
    response = getattr(cause, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return f"{type(error).__name__}: {code or type(cause).__name__}"


def _mark_reauthorization_required(settings: Settings, record: ConnectionRecord, owner: str, error: str) -> None:
    """A permanent refusal: the tokens stay stored (never lost), but the connection needs the user again."""
    record.status = "reauthorization_required"
    recorded = release_lease(
        record,
        owner,
        [
            ConnectionRecord.status.set("reauthorization_required"),
            ConnectionRecord.status_reason.set(error),
            ConnectionRecord.next_attempt_at.remove(),
            *refresh_schedule.apply_due(settings, record),
        ],
    )
    if not recorded:  # the lease is no longer ours (it ran out, or an edit ended the grant)
        return
    logger.warning("reauthorization required", extra={"connection_id": record.connection_id, "error_code": error})
    _announce(settings, record, "connection.reauthorization_required", event={"reason": error})


def _record_transient_failure(
    settings: Settings, record: ConnectionRecord, owner: str, reason: str, retry_after: int | None
) -> None:
    failures = int(record.consecutive_failures or 0) + 1
    now = utcnow()
    failing_since = record.failing_since or now
    delay = backoff_seconds(settings, failures, retry_after)
    record.next_attempt_at = now + timedelta(seconds=delay)
    actions: list[Any] = [
        ConnectionRecord.consecutive_failures.set(failures),
        ConnectionRecord.next_attempt_at.set(record.next_attempt_at),
        ConnectionRecord.failing_since.set(failing_since),
        ConnectionRecord.status_reason.set(reason[:200]),
        *refresh_schedule.apply_due(settings, record),
    ]
    became_error = record.status != "error" and (now - failing_since).total_seconds() >= settings.error_after_seconds
    if became_error:
        actions.append(ConnectionRecord.status.set("error"))
    release_lease(record, owner, actions)
    logger.warning(
        "refresh failed",
        extra={
            "connection_id": record.connection_id,
            "reason": reason,
            "failures": failures,
            "retry_in_seconds": delay,
        },
    )
    failed = {"reason": reason[:200], "consecutive_failures": failures, "next_attempt_in_seconds": delay}
    _announce(settings, record, "connection.refresh_failed", event=failed)
    if became_error:
        _announce(settings, record, "connection.error", event={"reason": reason[:200]})
