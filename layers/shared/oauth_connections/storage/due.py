"""The sparse, sharded due index, read for both kinds of due work: connection refreshes and feed runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from oauth_connections.storage.collection import Collection
from oauth_connections.storage.table import TENANT_PREFIX


def due_page(
    collection: Collection[Any], shard: str, until: datetime, limit: int, start: dict[str, Any] | None
) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
    """One page of (tenant_id, item id) of the collection due in a shard by `until`, and where to continue."""
    model: Any = collection.model  # the collection's item model, with its view of the DueIndex
    result = model.due_index.query(shard, model.due_at <= until, limit=limit, page_size=limit, last_evaluated_key=start)
    keys = [(item.pk.removeprefix(TENANT_PREFIX), item.sk.removeprefix(collection.sort_prefix)) for item in result]
    return keys, result.last_evaluated_key
