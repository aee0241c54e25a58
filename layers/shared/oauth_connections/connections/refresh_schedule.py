"""When a connection is next due for the scheduled refresh (the sparse DueIndex, storage/table.py).

- tokens with a known expiry: `refresh window` before they expire, but never before half their life
  has passed (so a token that lives shorter than the window is not due the moment it is stored);
- after a transient failure: when the backoff ends (`next_attempt_at`), not sooner;
- tokens without a known expiry but refreshable (a refresh token, or the client-credentials grant):
  a keep-alive check once per `keepalive` period, so they never die silently;
- nothing to do (pending, needs re-authorization, nothing refreshable): not in the index at all.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta
from typing import Any, cast

from oauth_connections.core.config import Settings
from oauth_connections.storage.connections import ConnectionRecord


def shard_of(connection_id: str, shards: int) -> str:
    return f"DUE#{zlib.crc32(connection_id.encode()) % shards:03d}"


def next_due(settings: Settings, record: ConnectionRecord) -> datetime | None:
    if record.status in ("pending", "reauthorization_required") or record.tokens_ciphertext is None:
        return None
    refreshable = record.has_refresh_token or record.grant_type == "client_credentials"
    if not refreshable:
        return None
    retry_at = cast(datetime | None, record.next_attempt_at)  # nullable; the stubs do not say so
    if retry_at is not None:
        return retry_at
    expires_at = cast(datetime | None, record.expires_at)
    obtained = cast(datetime | None, record.refreshed_at or record.connected_at)
    if expires_at is not None:
        due = expires_at - timedelta(minutes=settings.refresh_window_minutes)
        if obtained is not None and obtained < expires_at:
            # Tokens shorter-lived than the window would be due the moment they are stored: refresh
            # them no earlier than halfway through their life instead.
            due = max(due, obtained + (expires_at - obtained) / 2)
        return due
    last = obtained
    return last + timedelta(hours=settings.keepalive_hours) if last else None


def apply_due(settings: Settings, record: ConnectionRecord) -> list[Any]:
    """Set the record's due attributes; returns the matching update actions."""
    due = next_due(settings, record)
    if due is None:
        record.due_shard = None
        record.due_at = None
        return [ConnectionRecord.due_shard.remove(), ConnectionRecord.due_at.remove()]
    record.due_shard = shard_of(record.connection_id, settings.due_shards)
    record.due_at = due
    return [ConnectionRecord.due_shard.set(record.due_shard), ConnectionRecord.due_at.set(due)]
