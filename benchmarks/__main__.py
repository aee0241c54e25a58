"""make bench: measure the token hot path, the refresh and cold starts; rewrite BENCHMARKS.md's results.

Only the table goes to stdout. Everything the measured code prints (Powertools metrics and logs, the
embedded AWS, the local stack's functions, warnings) goes to the log file the table's footer names;
one progress line per section goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOG = REPO / ".bench" / "bench.log"
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"

import tests.conftest  # noqa: E402, F401 - the test environment: fake credentials, no tracing

os.environ["ALLOW_INSECURE_LOOPBACK_URLS"] = "true"  # the local token endpoint and feed server are on loopback

from benchmarks.output import output_to_log  # noqa: E402
from benchmarks.stats import percentile  # noqa: E402

Row = tuple[str, str, str]


@dataclass(frozen=True)
class Plan:
    iterations: int
    cold_runs: int
    sweep_connections: int
    slow_connections: int
    feed_mb: int
    outage_runs: int
    threads: int
    invocations: int


FULL = Plan(
    iterations=500,
    cold_runs=3,
    sweep_connections=300,
    slow_connections=75,
    feed_mb=100,
    outage_runs=5,
    threads=200,
    invocations=50,
)
QUICK = Plan(
    iterations=50,
    cold_runs=1,
    sweep_connections=20,
    slow_connections=25,
    feed_mb=8,
    outage_runs=1,
    threads=50,
    invocations=10,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every section, smaller: figures are not comparable")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md as it is")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    with output_to_log(LOG) as progress:
        rows = measure(plan, progress)
    table = render(rows, quick=args.quick)
    minutes = (time.monotonic() - started) / 60
    footer = f"\nMetrics and function logs: {LOG.relative_to(REPO)}. Wall time {minutes:.1f} min."
    if args.quick:
        footer += " Quick run: BENCHMARKS.md left as it is."
    elif not args.no_write:
        write_results(table)
        footer += " Results written to BENCHMARKS.md."
    print(table + "\n" + footer, flush=True)


def measure(plan: Plan, progress: Callable[[str], None]) -> list[Row]:
    from benchmarks.activity import measure as bench_activity
    from benchmarks.aws_outage import measure as bench_aws_outage
    from benchmarks.call_api import measure as bench_call_api
    from benchmarks.concurrency import in_process, through_lambda_endpoint
    from benchmarks.environment import Environment, quiet_logger
    from benchmarks.feed_memory import measure as bench_feed_memory

    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    rows: list[Row] = []
    with Environment() as env:
        quiet_logger()
        # First, while the due index is as a new stack's: the schedulers' first call is their sweep, which
        # would otherwise queue what the sections below leave due (their work, measured by the sweep rows).
        progress(f"cold starts, {plan.cold_runs} run(s) per function")
        rows += bench_cold_starts(env, plan.cold_runs)
        progress("warm retrieval")
        rows += bench_warm_retrieval(env, plan.iterations)
        progress("authorized call")
        rows += bench_call_api(env, plan.iterations, counted, per_service)
        progress(f"{plan.threads} concurrent warm retrievals")
        connection_id = env.connected_connection(expires_in=3600)
        rows += in_process(lambda: env.get_token(connection_id), plan.threads)
        progress("refresh")
        rows += bench_refresh(env)
        progress("activity log writes")
        rows += bench_activity(env)
        progress(f"sweep of {plan.sweep_connections} connections")
        rows += bench_sweep(env, plan.sweep_connections)
        progress(f"scheduled refresh against a 300 ms token endpoint, {plan.slow_connections} connections")
        rows += bench_slow_provider(env, plan.slow_connections)
    progress(f"feed fetch memory, {plan.feed_mb} MB")
    rows += bench_feed_memory(plan.feed_mb)
    progress(f"{plan.invocations} concurrent invocations through the local Lambda endpoint")
    rows += through_lambda_endpoint(plan.invocations)
    progress("AWS unavailable")
    rows += bench_aws_outage(plan.outage_runs)
    return rows


def render(rows: list[Row], *, quick: bool) -> str:
    lines = ["| measurement | value | note |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {quick_note(note) if quick else note} |" for name, value, note in rows]
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    heading = f"Measured {stamp} on {os.cpu_count()} cores, Python {sys.version.split()[0]}."
    if quick:
        heading = (
            f"QUICK run {stamp} (fewer iterations, runs and connections, a smaller feed): "
            "figures are not comparable with a full run."
        )
    return heading + "\n\n" + "\n".join(lines)


def quick_note(note: str) -> str:
    return f"quick: {note}" if note else "quick"


def write_results(table: str) -> None:
    path = REPO / "BENCHMARKS.md"
    text = path.read_text()
    start, end = text.index(RESULTS_START) + len(RESULTS_START), text.index(RESULTS_END)
    path.write_text(text[:start] + "\n" + table + "\n" + text[end:])


def counted(call: Callable[[], Any], *, all_threads: bool = False) -> tuple[Any, dict[str, int]]:
    """The AWS calls `call` makes; `all_threads` also counts those of threads it starts (the refresh worker's)."""
    from tests.support.aws_calls import count_aws_calls

    with count_aws_calls(all_threads=all_threads) as calls:
        result = call()
    return result, dict(calls)


def per_service(calls: dict[str, int], service: str) -> int:
    return sum(n for name, n in calls.items() if name.startswith(service + "."))


def bench_warm_retrieval(env: Any, iterations: int) -> list[Row]:
    """GetToken's handler against one raw GetItem of the same item, alternating so both see the same load."""
    connection_id = env.connected_connection(expires_in=3600)
    env.get_token(connection_id)  # warm: module imported, data key cached
    get_item = env.raw_get_item(connection_id)
    get_item()
    _, calls = counted(lambda: [env.get_token(connection_id) for _ in range(20)])
    samples, raw = [], []
    for _ in range(iterations):
        started = time.perf_counter()
        result = env.get_token(connection_id)
        samples.append((time.perf_counter() - started) * 1000)
        assert "access_token" in result, result
        started = time.perf_counter()
        get_item()
        raw.append((time.perf_counter() - started) * 1000)
    p50, raw_p50 = statistics.median(samples), statistics.median(raw)
    return [
        ("warm GetToken latency p50", f"{p50:.2f} ms", f"{iterations} in-process calls, embedded AWS"),
        ("warm GetToken latency p99", f"{percentile(samples, 0.99):.2f} ms", ""),
        ("raw GetItem latency p50", f"{raw_p50:.2f} ms", "the same item, consistent read, plain boto3 client"),
        ("warm GetToken / raw GetItem (p50)", f"{p50 / raw_p50:.2f}x", "same run, calls alternating; target 1.2x"),
        ("DynamoDB calls per warm retrieval", f"{per_service(calls, 'dynamodb') / 20:g}", str(sorted(calls))),
        ("KMS calls per warm retrieval", f"{per_service(calls, 'kms') / 20:g}", "connection key cached in memory"),
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
        (
            "KMS calls per refresh",
            f"{per_service(totals, 'kms') / runs:g}",
            "new tokens sealed under the connection key (cached)",
        ),
        (
            "refresh latency p50 (local token endpoint)",
            f"{statistics.median(durations):.2f} ms",
            f"{runs} forced refreshes",
        ),
    ]


def bench_sweep(env: Any, count: int) -> list[tuple[str, str, str]]:
    """One sweep over `count` due connections, then one worker draining the queue in the template's batches."""
    ids = env.due_connections(count)
    started = time.perf_counter()
    queued, sweep_calls = counted(env.sweep, all_threads=True)  # the shard readers are threads
    sweep_seconds = time.perf_counter() - started
    assert queued == count, (queued, count)
    started = time.perf_counter()
    (refreshed, batches), worker_calls = counted(env.drain_refresh_queue, all_threads=True)
    worker_seconds = time.perf_counter() - started
    assert refreshed == len(ids), (refreshed, len(ids))
    per = {name: n / refreshed for name, n in sorted(worker_calls.items()) if not name.startswith("sqs.")}
    return [
        ("sweep: due connections queued", f"{queued} in {sweep_seconds * 1000:.0f} ms", str(dict(sweep_calls))),
        (
            "scheduled refresh throughput, one worker",
            f"{refreshed / worker_seconds:.0f} connections/s",
            f"{batches} batches of up to {env.refresh_batch_size} against a local token endpoint",
        ),
        (
            "DynamoDB calls per scheduled refresh",
            f"{per_service(worker_calls, 'dynamodb') / refreshed:g}",
            str({name: round(n, 2) for name, n in per.items()}),
        ),
    ]


# The one-at-a-time baseline is measured as it always was, in batches of 10, so its figure stays comparable.
SERIAL_BATCH_SIZE = 10


def bench_slow_provider(env: Any, count: int) -> list[Row]:
    """Scheduled refreshes against a token endpoint that answers in 300 ms: the worker's throughput one
    message at a time and with a batch's messages refreshed concurrently, both in this run, and its KMS
    calls per refresh on a first pass (connections it has not seen) and a second (the same again)."""
    ids = env.due_connections(count, token_url=env.slow_token_endpoint_url)

    def drain(batch_size: int | None = None) -> tuple[float, float, dict[str, int]]:
        queued = env.sweep()
        assert queued == count, (queued, count)
        started = time.perf_counter()
        (refreshed, _), calls = counted(lambda: env.drain_refresh_queue(batch_size), all_threads=True)
        elapsed = time.perf_counter() - started
        assert refreshed == count, (refreshed, count)
        env.age_all(ids)
        return refreshed / elapsed, per_service(calls, "kms") / refreshed, calls

    env.batch_concurrency(1)
    serial, _, _ = drain(SERIAL_BATCH_SIZE)
    size, concurrency = env.refresh_batch_size, env.refresh_batch_concurrency
    env.batch_concurrency(concurrency)
    env.forget_data_keys()  # a worker new to these connections: none of their keys cached
    (throughput, cold_kms, cold_calls), (_, warm_kms, warm_calls) = drain(), drain()
    kms = {name: round(n / count, 2) for name, n in sorted(cold_calls.items()) if name.startswith("kms.")}
    warm = {name: round(n / count, 2) for name, n in sorted(warm_calls.items()) if name.startswith("kms.")}
    return [
        (
            "scheduled refresh throughput per worker, 300 ms token endpoint, one message at a time",
            f"{serial:.2f} refreshes/s",
            f"{count} connections in batches of {SERIAL_BATCH_SIZE}, RefreshBatchConcurrency=1",
        ),
        (
            "scheduled refresh throughput per worker, 300 ms token endpoint",
            f"{throughput:.2f} refreshes/s",
            f"the same connections in batches of {size} (the template's BatchSize), "
            f"RefreshBatchConcurrency={concurrency} (up to {concurrency} messages of a batch at once)",
        ),
        (
            "concurrent / one-at-a-time scheduled refresh throughput",
            f"{throughput / serial:.1f}x",
            "same run, same connections; target 8x",
        ),
        ("KMS calls per scheduled refresh, worker new to the connection", f"{cold_kms:.2f}", f"{kms}; target 1"),
        ("KMS calls per scheduled refresh, warm worker", f"{warm_kms:.2f}", f"{warm or 'none'}; target 0"),
    ]


def bench_cold_starts(env: Any, runs: int) -> list[Row]:
    baseline = statistics.median(env.cold_baseline() for _ in range(runs))
    compiled = statistics.median(env.cold_baseline(precompiled=True) for _ in range(runs))
    rows = [
        (
            "cold init naive baseline",
            f"{baseline:.0f} ms",
            "imports boto3, requests, authlib, Powertools, pynamodb; creates two clients; its layer as sources, "
            "as `sam build` makes it by default; same run",
        ),
        (
            "cold init naive baseline on this stack's precompiled layer / naive baseline",
            f"{compiled / baseline:.2f}x",
            f"{compiled:.0f} ms; the same script, the bytecode shipped; same run",
        ),
    ]
    floors = [env.cold_floors() for _ in range(runs)]
    for name in floors[0]:
        floor = statistics.median(f[name] for f in floors)
        rows.append(
            (
                f"cold init floor: {name} / naive baseline",
                f"{floor / baseline:.2f}x",
                f"{floor:.0f} ms ({floor / compiled:.2f}x the precompiled baseline); the least a function on "
                "these libraries spends; same run",
            )
        )
    for function in env.functions():
        timings = [env.cold_start(function) for _ in range(runs)]
        median = statistics.median(t["total_ms"] for t in timings)
        imports = statistics.median(t["import_ms"] for t in timings)
        target = "0.5x" if function == "get_token" else "1.0x"
        rows.append(
            (
                f"cold init {function} / naive baseline",
                f"{median / baseline:.2f}x",
                f"{median / compiled:.2f}x the precompiled baseline; import {imports:.0f} ms + first call "
                f"{median - imports:.0f} ms; target {target}; modules: {timings[0]['heavy']}",
            )
        )
    return rows


if __name__ == "__main__":
    main()
