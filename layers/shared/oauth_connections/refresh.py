"""Single-flight token refresh, shared by GetTokenFunction and the scheduled refresh.

Rotating refresh tokens make a concurrent refresh fatal: the provider sees the old refresh token used
twice, answers invalid_grant and revokes the grant. So exactly one caller, across every Lambda instance,
talks to the provider per rotation: it takes a lease on the connection item (a conditional write with
an owner and an expiry), refreshes, and stores the new tokens with a condition on the token version,
before anyone sees the new access token. Everyone else waits, bounded, and reads the result. A holder
that dies leaves a lease that expires, and the next caller takes over.

Failures are classified: a permanent OAuth error makes the connection `reauthorization_required`;
anything transient keeps the tokens and sets a cooldown (exponential backoff with jitter, honouring
Retry-After), so a failing provider is not hammered by every caller.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from oauth_connections import events, oauth, schedule, storage, tokens
from oauth_connections.config import Settings, url_policy
from oauth_connections.errors import ServiceError
from oauth_connections.observability import logger
from oauth_connections.storage import ConnectionRecord, utcnow

R = ConnectionRecord


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
    tokens: oauth.TokenSet


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


def refresh_connection(
    settings: Settings, record: ConnectionRecord, *, reason: str, wait: bool = True, retry_refused: bool = False
) -> Refreshed:
    """Refresh the connection's tokens, or wait for whoever is already doing it (unless `wait` is off).

    `retry_refused` tries once more a connection the provider refused (a new client secret may fix it).
    """
    deadline = time.monotonic() + settings.refresh_wait_seconds
    seen = int(record.token_version or 0)
    pause = 0.05
    while True:
        if record.status == "reauthorization_required" and not retry_refused:
            raise TokenError("reauthorization_required", "the connection must be authorized again")
        if record.tokens_ciphertext is None:  # an edit ended the grant while we waited
            raise TokenError("not_connected", "the connection has not been authorized yet")
        if int(record.token_version or 0) != seen:
            current = tokens.decrypt_tokens(settings, record)
            if current is not None:
                return Refreshed(record, current)
        cooling = cooldown_error(record)
        if cooling:
            raise cooling
        owner = uuid.uuid4().hex
        if storage.acquire_lease(record, owner, utcnow() + timedelta(seconds=settings.refresh_lease_seconds)):
            return _refresh_as_holder(settings, record, owner, seen, reason)
        if not wait or time.monotonic() >= deadline:
            raise TokenError("provider_unavailable", "another refresh is still in progress", retry_after=1)
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)
        record = storage.load_connection(record.tenant_id, record.connection_id, consistent=True)


def _refresh_as_holder(settings: Settings, record: ConnectionRecord, owner: str, seen: int, reason: str) -> Refreshed:
    context = {"tenant_id": record.tenant_id, "connection_id": record.connection_id, "reason": reason}
    current = tokens.decrypt_tokens(settings, record)
    client = tokens.client_settings(settings, record)
    started = time.monotonic()
    try:
        if record.grant_type == "client_credentials":
            fresh = oauth.client_credentials(client, policy=url_policy(), timeout=settings.outbound_timeout_seconds)
        elif current is None:
            raise oauth.ProviderRejectedError("invalid_grant", "the connection has no tokens")
        else:
            fresh = oauth.refresh(client, current, policy=url_policy(), timeout=settings.outbound_timeout_seconds)
    except oauth.ProviderRejectedError as error:
        if error.permanent:
            _mark_reauthorization_required(settings, record, owner, error.error)
            raise TokenError("reauthorization_required", "the provider refused the refresh token") from error
        _record_transient_failure(settings, record, owner, f"provider answered {error.error}", None)
        raise TokenError(
            "provider_unavailable",
            "the provider refused the refresh for now",
            retry_after=_seconds_until(record.next_attempt_at),
        ) from error
    except oauth.ProviderUnavailableError as error:
        _record_transient_failure(settings, record, owner, error.message, error.retry_after)
        raise TokenError(
            "provider_unavailable", error.message, retry_after=_seconds_until(record.next_attempt_at)
        ) from error

    tokens.apply_tokens(settings, record, fresh)
    now = utcnow()
    record.refreshed_at, record.status, record.next_attempt_at = now, "connected", None
    actions: list[Any] = [
        R.tokens_ciphertext.set(record.tokens_ciphertext),
        R.token_version.set(seen + 1),
        R.has_refresh_token.set(record.has_refresh_token),
        R.refreshed_at.set(now),
        R.status.set("connected"),
        R.consecutive_failures.set(0),
        R.next_attempt_at.remove(),
        R.failing_since.remove(),
        R.status_reason.remove(),
        *schedule.apply_due(settings, record),
    ]
    actions.append(R.expires_at.set(record.expires_at) if record.expires_at else R.expires_at.remove())
    actions.append(
        R.granted_scopes.set(record.granted_scopes) if record.granted_scopes is not None else R.granted_scopes.remove()
    )
    if not storage.store_refreshed(record, seen, actions):
        # Only possible if our lease expired and another holder stored a newer rotation: use theirs.
        logger.error("refresh result superseded", extra=context)
        latest = storage.load_connection(record.tenant_id, record.connection_id, consistent=True)
        latest_tokens = tokens.decrypt_tokens(settings, latest)
        if latest_tokens is None:
            raise TokenError("not_connected", "the connection has no tokens")
        return Refreshed(latest, latest_tokens)
    logger.info("tokens refreshed", extra=context | {"duration_ms": int((time.monotonic() - started) * 1000)})
    if settings.publish_refreshed_events:
        events.publish(
            settings.event_bus_name,
            "connection.refreshed",
            tenant_id=record.tenant_id,
            connection_id=record.connection_id,
            status="connected",
            reason=reason,
        )
    return Refreshed(record, fresh)


def _mark_reauthorization_required(settings: Settings, record: ConnectionRecord, owner: str, error: str) -> None:
    """A permanent refusal: the tokens stay stored (never lost), but the connection needs the user again."""
    record.status = "reauthorization_required"
    recorded = storage.release_lease(
        record,
        owner,
        [
            R.status.set("reauthorization_required"),
            R.status_reason.set(error),
            R.next_attempt_at.remove(),
            *schedule.apply_due(settings, record),
        ],
    )
    if not recorded:  # the lease is no longer ours (it ran out, or an edit ended the grant)
        return
    logger.warning("reauthorization required", extra={"connection_id": record.connection_id, "error_code": error})
    events.publish(
        settings.event_bus_name,
        "connection.reauthorization_required",
        tenant_id=record.tenant_id,
        connection_id=record.connection_id,
        status="reauthorization_required",
        reason=error,
    )


def _record_transient_failure(
    settings: Settings, record: ConnectionRecord, owner: str, reason: str, retry_after: int | None
) -> None:
    failures = int(record.consecutive_failures or 0) + 1
    now = utcnow()
    failing_since = record.failing_since or now
    delay = backoff_seconds(settings, failures, retry_after)
    record.next_attempt_at = now + timedelta(seconds=delay)
    actions: list[Any] = [
        R.consecutive_failures.set(failures),
        R.next_attempt_at.set(record.next_attempt_at),
        R.failing_since.set(failing_since),
        R.status_reason.set(reason[:200]),
        *schedule.apply_due(settings, record),
    ]
    became_error = record.status != "error" and (now - failing_since).total_seconds() >= settings.error_after_seconds
    if became_error:
        actions.append(R.status.set("error"))
    storage.release_lease(record, owner, actions)
    logger.warning(
        "refresh failed",
        extra={
            "connection_id": record.connection_id,
            "reason": reason,
            "failures": failures,
            "retry_in_seconds": delay,
        },
    )
    events.publish(
        settings.event_bus_name,
        "connection.refresh_failed",
        tenant_id=record.tenant_id,
        connection_id=record.connection_id,
        status=record.status,
        reason=reason[:200],
        consecutive_failures=failures,
        next_attempt_in_seconds=delay,
    )
    if became_error:
        events.publish(
            settings.event_bus_name,
            "connection.error",
            tenant_id=record.tenant_id,
            connection_id=record.connection_id,
            status="error",
            reason=reason[:200],
        )
