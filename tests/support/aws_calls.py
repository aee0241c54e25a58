"""Count the AWS API calls made in this process (every boto3/botocore/pynamodb client), per operation."""

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
