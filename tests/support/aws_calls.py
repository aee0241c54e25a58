"""Count the AWS API calls made in this process (every boto3/botocore/pynamodb client), per operation,
and the DynamoDB writes of items under a key prefix."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import botocore.client


@contextmanager
def count_aws_calls(*, all_threads: bool = False) -> Iterator[Counter[str]]:
    """Yields a Counter of "service.Operation" that fills while the block runs.

    Only the calls of the thread that opened the block count, unless `all_threads`: a local stack
    running in the same process polls its queues from threads of its own.
    """
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    owner = threading.get_ident()
    original = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]

    def counting(self: Any, operation_name: str, api_params: Any) -> Any:
        if all_threads or threading.get_ident() == owner:
            with lock:
                calls[f"{self.meta.service_model.service_name}.{operation_name}"] += 1
        return original(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = counting  # type: ignore[attr-defined]
    try:
        yield calls
    finally:
        botocore.client.BaseClient._make_api_call = original  # type: ignore[attr-defined]


WRITES = ("PutItem", "UpdateItem", "DeleteItem")
TRANSACTION_WRITES = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}


def _writes(operation_name: str, api_params: Any) -> list[tuple[str, Any]]:
    """The item writes of one DynamoDB call, as (operation, the item or key); a transaction's each."""
    if operation_name in WRITES:
        return [(operation_name, api_params.get("Item") or api_params.get("Key") or {})]
    if operation_name == "TransactWriteItems":
        return [
            (TRANSACTION_WRITES[kind], part.get("Item") or part.get("Key") or {})
            for entry in api_params["TransactItems"]
            for kind, part in entry.items()
            if kind in TRANSACTION_WRITES
        ]
    return []


@contextmanager
def count_item_writes(prefix: str, *, all_threads: bool = False) -> Iterator[Counter[str]]:
    """Yields a Counter of this thread's DynamoDB item writes (a transaction's counted item by item):
    "<operation>" for every one, and "<operation> <prefix>" for an item whose partition key starts with
    `prefix`. With `all_threads`, also those of the threads the block starts (the refresh worker's)."""
    calls: Counter[str] = Counter()
    owner = threading.get_ident()
    original = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]

    lock = threading.Lock()

    def counting(self: Any, operation_name: str, api_params: Any) -> Any:
        if all_threads or threading.get_ident() == owner:
            with lock:
                for operation, item in _writes(operation_name, api_params):
                    calls[operation] += 1
                    if str(item.get("pk", {}).get("S", "")).startswith(prefix):
                        calls[f"{operation} {prefix}"] += 1
        return original(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = counting  # type: ignore[attr-defined]
    try:
        yield calls
    finally:
        botocore.client.BaseClient._make_api_call = original  # type: ignore[attr-defined]
