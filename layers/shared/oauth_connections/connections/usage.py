"""The last use of a connection (a token retrieval or an API call), so tenants can see which are still used.

Kept to ten minutes: the warm path stays one read, and a write happens only when the stored mark is older.
A storage outage costs the mark, never the token or the call it accompanies.
"""

from __future__ import annotations

from datetime import timedelta

from oauth_connections.core import aws
from oauth_connections.core.clock import utcnow
from oauth_connections.core.observability import logger
from oauth_connections.storage import connections as store
from oauth_connections.storage.connections import ConnectionRecord

LAST_USED_RESOLUTION = timedelta(minutes=10)


def mark_used(record: ConnectionRecord) -> None:
    try:
        store.mark_used(record, utcnow(), LAST_USED_RESOLUTION)
    except Exception as error:
        if not aws.is_unavailable(error):
            raise
        logger.warning("last use not recorded: storage unavailable", extra={"error": type(error).__name__})
