"""Status events on EventBridge, for the platform to learn about connections before campaigns fail."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

from oauth_connections.observability import logger

SOURCE = "oauth-connections"


@cache
def _client() -> Any:
    import boto3

    return boto3.client("events")


def publish(bus_name: str, detail_type: str, *, tenant_id: str, connection_id: str, **fields: Any) -> None:
    """Publish one event; a failure to publish is logged, never fatal to the change it reports."""
    detail = {
        "tenant_id": tenant_id,
        "connection_id": connection_id,
        "time": datetime.now(UTC).isoformat(),
        **fields,
    }
    entry = {"Source": SOURCE, "DetailType": detail_type, "Detail": json.dumps(detail), "EventBusName": bus_name}
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        result = _client().put_events(Entries=[entry])
    except (BotoCoreError, ClientError):
        logger.exception("event not published", extra={"detail_type": detail_type, "connection_id": connection_id})
        return
    if result.get("FailedEntryCount"):
        logger.error(
            "event not published",
            extra={"detail_type": detail_type, "connection_id": connection_id, "entries": result.get("Entries")},
        )
