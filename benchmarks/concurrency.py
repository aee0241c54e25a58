"""Warm token retrievals under concurrency: threads calling the handler in one process, and concurrent
invocations through the local Lambda endpoint. Every call must answer a token; errors are counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.local_stack import connected_stack
from benchmarks.stats import percentile
from tests.support.stack_flows import invoke

Row = tuple[str, str, str]


def run_concurrently(call: Callable[[], bool], count: int) -> tuple[list[float], int]:
    """`count` threads start `call` together (behind a barrier); their latencies in ms and the failures."""
    barrier = threading.Barrier(count)

    def one() -> tuple[float, bool]:
        barrier.wait()
        started = time.perf_counter()
        try:
            ok = call()
        except Exception:  # noqa: BLE001 - counted: the benchmark reports errors, it does not stop at one
            ok = False
        return (time.perf_counter() - started) * 1000, ok

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(lambda _: one(), range(count)))
    return [ms for ms, _ in results], sum(1 for _, ok in results if not ok)


def rows_for(label: str, latencies: list[float], errors: int, note: str) -> list[Row]:
    return [
        (f"{label}: errors", str(errors), f"{len(latencies)} at once; {note}; target 0"),
        (f"{label}: p50", f"{percentile(latencies, 0.5):.1f} ms", ""),
        (f"{label}: p99", f"{percentile(latencies, 0.99):.1f} ms", ""),
    ]


def in_process(get_token: Callable[[], dict[str, Any]], threads: int) -> list[Row]:
    get_token()  # warm
    latencies, errors = run_concurrently(lambda: "access_token" in get_token(), threads)
    label = f"{threads} concurrent warm retrievals, one process"
    return rows_for(label, latencies, errors, "threads calling the handler, embedded AWS")


def through_lambda_endpoint(invocations: int) -> list[Row]:
    with connected_stack() as connected:
        client = connected.stack.lambda_client()

        def call() -> bool:
            result = invoke(client, connected.payload)
            return result.function_error is None and "access_token" in result.payload

        connected.warm()
        _, warmup_errors = run_concurrently(call, invocations)  # starts the workers: cold starts, not measured
        latencies, errors = run_concurrently(call, invocations)
    label = f"{invocations} concurrent invocations, local Lambda endpoint"
    note = f"GetTokenFunction, warm workers (the warm-up round that started them had {warmup_errors} errors)"
    return rows_for(label, latencies, errors, note)
