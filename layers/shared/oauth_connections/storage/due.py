"""The sparse, sharded due index, read for both kinds of due work: connection refreshes and feed runs."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from oauth_connections.storage.collection import Collection
from oauth_connections.storage.table import TENANT_PREFIX

# Shards read at once by a sweep. Each shard is one short Query after another, so the sweep's time is
# mostly waiting for DynamoDB: a few readers cut it (and a cold sweep's first call) several times over,
# while every page still goes through one shared client with a pool of 10 connections.
SHARD_READERS = 4


def due_page(
    collection: Collection[Any], shard: str, until: datetime, limit: int, start: dict[str, Any] | None
) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
    """One page of (tenant_id, item id) of the collection due in a shard by `until`, and where to continue."""
    model: Any = collection.model  # the collection's item model, with its view of the DueIndex
    result = model.due_index.query(shard, model.due_at <= until, limit=limit, page_size=limit, last_evaluated_key=start)
    keys = [(item.pk.removeprefix(TENANT_PREFIX), item.sk.removeprefix(collection.sort_prefix)) for item in result]
    return keys, result.last_evaluated_key


def sweep_due(
    collection: Collection[Any],
    shards: Sequence[str],
    until: datetime,
    limit: int,
    handle: Callable[[list[tuple[str, str]]], int],
) -> int:
    """Every page of what is due by `until` in each of the shards, handed to `handle`; the sum of its results.

    Each shard is read page after page to its end, up to SHARD_READERS shards at once; `handle` runs in the
    thread that read the page, in a copy of the caller's context (so with the invocation's deadline), and
    what it calls must be thread-safe (core/aws.py builds each client once, whichever thread asks first).
    An error ends the sweep: the shards not yet started are not read (the next sweep reads them), those
    being read finish, then the error is raised. A failing AWS fails every shard alike, so reading on would
    only multiply the time to the answer.
    """

    failed = threading.Event()  # set by the first shard that fails, before its thread takes another

    def read_shard(shard: str) -> int:
        if failed.is_set():
            return 0
        handled = 0
        start: dict[str, Any] | None = None
        try:
            while True:
                keys, start = due_page(collection, shard, until, limit, start)
                handled += handle(keys)
                if not start:
                    return handled
        except BaseException:
            failed.set()
            raise

    if not shards:
        return 0
    with ThreadPoolExecutor(max_workers=min(SHARD_READERS, len(shards))) as pool:
        futures = [pool.submit(contextvars.copy_context().run, read_shard, shard) for shard in shards]
        try:
            return sum(future.result() for future in futures)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
