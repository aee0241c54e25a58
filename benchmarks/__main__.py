"""make bench: measure the token hot path, the refresh and cold starts; rewrite BENCHMARKS.md's results."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"

import tests.conftest  # noqa: E402, F401 - the test environment: fake credentials, no tracing

os.environ["ALLOW_INSECURE_LOOPBACK_URLS"] = "true"  # the local token endpoint and feed server are on loopback


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--sweep-connections", type=int, default=300)
    parser.add_argument("--feed-mb", type=int, default=100, help="feed size of the feed memory benchmark")
    parser.add_argument("--outage-runs", type=int, default=5, help="invocations per fault with AWS unavailable")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md as it is")
    args = parser.parse_args()

    from benchmarks.call_api import measure as bench_call_api
    from benchmarks.environment import Environment

    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    with Environment() as env:
        from oauth_connections.core.observability import logger

        logger.setLevel("WARNING")
        rows = [
            *bench_warm_retrieval(env, args.iterations),
            *bench_call_api(env, args.iterations, counted, per_service),
            *bench_refresh(env),
            *bench_sweep(env, args.sweep_connections),
            *bench_cold_starts(env, args.cold_runs),
        ]
    from benchmarks.feed_memory import measure as bench_feed_memory

    rows += bench_feed_memory(args.feed_mb)
    from benchmarks.aws_outage import measure as bench_aws_outage

    rows += bench_aws_outage(args.outage_runs)
    table = render(rows)
    print(table)
    if not args.no_write:
        write_results(table)


def render(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| measurement | value | note |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {note} |" for name, value, note in rows]
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    return f"Measured {stamp} on {os.cpu_count()} cores, Python {sys.version.split()[0]}.\n\n" + "\n".join(lines)


def write_results(table: str) -> None:
    path = REPO / "BENCHMARKS.md"
    text = path.read_text()
    start, end = text.index(RESULTS_START) + len(RESULTS_START), text.index(RESULTS_END)
    path.write_text(text[:start] + "\n" + table + "\n" + text[end:])


def counted(call: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    from tests.support.aws_calls import count_aws_calls

    with count_aws_calls() as calls:
        result = call()
    return result, dict(calls)


def per_service(calls: dict[str, int], service: str) -> int:
    return sum(n for name, n in calls.items() if name.startswith(service + "."))


def bench_warm_retrieval(env: Any, iterations: int) -> list[tuple[str, str, str]]:
    connection_id = env.connected_connection(expires_in=3600)
    env.get_token(connection_id)  # warm: module imported, data key cached
    samples = []
    _, calls = counted(lambda: [env.get_token(connection_id) for _ in range(20)])
    for _ in range(iterations):
        started = time.perf_counter()
        result = env.get_token(connection_id)
        samples.append((time.perf_counter() - started) * 1000)
        assert "access_token" in result, result
    return [
        (
            "warm GetToken latency p50",
            f"{statistics.median(samples):.2f} ms",
            f"{iterations} in-process calls, embedded AWS",
        ),
        ("warm GetToken latency p99", f"{percentile(samples, 0.99):.2f} ms", ""),
        ("DynamoDB calls per warm retrieval", f"{per_service(calls, 'dynamodb') / 20:g}", str(sorted(calls))),
        ("KMS calls per warm retrieval", f"{per_service(calls, 'kms') / 20:g}", "data key cached in memory"),
    ]


def bench_refresh(env: Any) -> list[tuple[str, str, str]]:
    connection_id = env.connected_connection(expires_in=3600, token_url=env.token_endpoint_url)
    env.get_token(connection_id, force=True, aged=True)  # warm the refresh path once
    runs = 10
    totals: dict[str, int] = {}
    durations = []
    for _ in range(runs):
        env.age(connection_id)
        started = time.perf_counter()
        result, calls = counted(lambda: env.get_token(connection_id, force=True))
        durations.append((time.perf_counter() - started) * 1000)
        assert "access_token" in result, result
        for name, n in calls.items():
            totals[name] = totals.get(name, 0) + n
    per_refresh = {name: n / runs for name, n in sorted(totals.items())}
    return [
        ("DynamoDB calls per refresh", f"{per_service(totals, 'dynamodb') / runs:g}", str(per_refresh)),
        ("KMS calls per refresh", f"{per_service(totals, 'kms') / runs:g}", "new tokens need a data key (cached)"),
        (
            "refresh latency p50 (local token endpoint)",
            f"{statistics.median(durations):.2f} ms",
            f"{runs} forced refreshes",
        ),
    ]


def bench_sweep(env: Any, count: int) -> list[tuple[str, str, str]]:
    """One sweep over `count` due connections, then one worker draining the queue in batches of 10."""
    ids = env.due_connections(count)
    started = time.perf_counter()
    queued, sweep_calls = counted(env.sweep)
    sweep_seconds = time.perf_counter() - started
    assert queued == count, (queued, count)
    started = time.perf_counter()
    (refreshed, batches), worker_calls = counted(env.drain_refresh_queue)
    worker_seconds = time.perf_counter() - started
    assert refreshed == len(ids), (refreshed, len(ids))
    per = {name: n / refreshed for name, n in sorted(worker_calls.items()) if not name.startswith("sqs.")}
    return [
        ("sweep: due connections queued", f"{queued} in {sweep_seconds * 1000:.0f} ms", str(dict(sweep_calls))),
        (
            "scheduled refresh throughput, one worker",
            f"{refreshed / worker_seconds:.0f} connections/s",
            f"{batches} batches of 10 against a local token endpoint",
        ),
        (
            "DynamoDB calls per scheduled refresh",
            f"{per_service(worker_calls, 'dynamodb') / refreshed:g}",
            str({name: round(n, 2) for name, n in per.items()}),
        ),
        (
            "KMS calls per scheduled refresh",
            f"{per_service(worker_calls, 'kms') / refreshed:.2f}",
            "token set and client secret decrypted, a data key for the new token set",
        ),
    ]


def bench_cold_starts(env: Any, runs: int) -> list[tuple[str, str, str]]:
    baseline = statistics.median(env.cold_baseline() for _ in range(runs))
    rows = [("cold baseline: import all dependencies", f"{baseline:.0f} ms", "plain script, same run")]
    for function in env.functions():
        timings = [env.cold_start(function) for _ in range(runs)]
        median = statistics.median(t["total_ms"] for t in timings)
        imports = statistics.median(t["import_ms"] for t in timings)
        rows.append(
            (
                f"cold init {function}",
                f"{median / baseline:.2f}x baseline",
                f"import {imports:.0f} ms + first call {median - imports:.0f} ms; modules: {timings[0]['heavy']}",
            )
        )
    return rows


if __name__ == "__main__":
    main()
