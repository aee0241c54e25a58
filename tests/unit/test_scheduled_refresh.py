"""The scheduled refresh in-process: RefreshSchedulerFunction sweeps the DueIndex into the real (embedded)
RefreshQueue, RefreshWorkerFunction refreshes what it receives, with every failure class of a provider."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import boto3
import pytest

from oauth_connections.connections import refresh_schedule, tokens
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import get_settings
from oauth_connections.oauth import token_endpoint
from oauth_connections.storage.binding import bind_table
from oauth_connections.storage.connections import ConnectionRecord
from tests.conftest import EventCapture, InProcessApi, LambdaContext, LogCapture, Resources, load_handler
from tests.support.aws_calls import count_aws_calls
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.support.token_endpoint import RESET, Scripted, ScriptedTokenEndpoint
from tests.unit.flow_helpers import connect, create_connection
from tests.unit.scheduled_helpers import (
    RefreshQueue,
    age_tokens,
    answering,
    connected_record,
    dynamodb_requests,
    emptied_queue,
    insert_connected,
    load,
    make_due,
    raw_item,
    stored_tokens,
    sweep,
    write_records,
)

FRESH = {"access_token": "fresh-access", "token_type": "Bearer", "expires_in": 3600}


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> Iterator[ScriptedTokenEndpoint]:
    with answering(running_endpoint, FRESH) as answering_endpoint:
        yield answering_endpoint


@pytest.fixture
def queue(service_env: Resources) -> RefreshQueue:
    return emptied_queue(service_env.refresh_queue_url)


@pytest.fixture
def loopback(service_env: Resources, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripted endpoint runs on loopback, which only the local-stack setting admits."""
    monkeypatch.setenv("ALLOW_INSECURE_LOOPBACK_URLS", "true")
    get_settings.cache_clear()


def refresh_tokens_requested(endpoint: ScriptedTokenEndpoint) -> Counter[str]:
    return Counter(r.form.get("refresh_token", "") for r in endpoint.requests)


# ------------------------------------------------------------------ scale


@pytest.fixture
def own_table(service_env: Resources, monkeypatch: pytest.MonkeyPatch, loopback: None) -> Iterator[str]:
    """A table of the template's definition for this test alone, dropped afterwards.

    Thousands of items in the shared table would slow every later transaction of the session (the
    embedded AWS copies the table for each), and the sweep here must see no other test's connections.
    """
    dynamodb = boto3.client("dynamodb")
    shared = dynamodb.describe_table(TableName=service_env.table_name)["Table"]
    name = f"{service_env.table_name}-scale-{time.time_ns()}"
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=shared["AttributeDefinitions"],
        KeySchema=shared["KeySchema"],
        GlobalSecondaryIndexes=[
            {"IndexName": index["IndexName"], "KeySchema": index["KeySchema"], "Projection": index["Projection"]}
            for index in shared["GlobalSecondaryIndexes"]
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    monkeypatch.setenv("CONNECTIONS_TABLE_NAME", name)
    get_settings.cache_clear()
    bind_table(name)
    yield name
    bind_table(service_env.table_name)
    dynamodb.delete_table(TableName=name)


@pytest.fixture
def fast_queue_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded SQS recomputes its queue-wide counts for every message it sends or returns, reading a
    datetime-based clock once per queued message: with a thousand messages queued, that alone would take
    most of this test. The same clock, read from time.time()."""
    import moto.sqs.models as embedded_sqs

    slow_seconds, slow_millis = vars(embedded_sqs)["unix_time"], vars(embedded_sqs)["unix_time_millis"]

    def unix_time(dt: Any = None) -> float:
        return slow_seconds(dt) if dt is not None else time.time()

    def unix_time_millis(dt: Any = None) -> float:
        return slow_millis(dt) if dt is not None else time.time() * 1000.0

    monkeypatch.setattr(embedded_sqs, "unix_time", unix_time)
    monkeypatch.setattr(embedded_sqs, "unix_time_millis", unix_time_millis)


def test_one_sweep_queues_exactly_the_due_connections_and_the_worker_refreshes_each_once(
    own_table: str,
    fast_queue_clock: None,
    queue: RefreshQueue,
    endpoint: ScriptedTokenEndpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DUE_SHARDS", "4")  # about 250 due per shard: the sweep pages through each shard
    get_settings.cache_clear()
    settings = get_settings()
    tenant = f"scale-{time.time_ns()}"
    now = int(time.time())

    def token_set(i: int) -> token_endpoint.TokenSet:
        expires_in = 300 if i % 2 == 0 else 7200  # within the refresh window, or well beyond it
        return token_endpoint.TokenSet(f"access-{i}", "Bearer", f"refresh-{i}", now + expires_in, ("read",))

    # A few through insert_connection + store_connected, the bulk as store_connected would leave them.
    exemplars = {insert_connected(tenant, endpoint.url, token_set(i), name=f"conn {i}"): i for i in range(20)}
    with ThreadPoolExecutor(4) as pool:
        bulk = list(
            pool.map(lambda i: connected_record(tenant, endpoint.url, token_set(i), name=f"conn {i}"), range(20, 2000))
        )
    write_records(bulk)
    number_of = exemplars | {record.connection_id: i for i, record in enumerate(bulk, start=20)}
    due = {connection_id for connection_id, i in number_of.items() if i % 2 == 0}
    assert len(number_of) == 2000 and len(due) == 1000

    window = timedelta(minutes=settings.refresh_window_minutes)
    for connection_id, i in list(exemplars.items())[:4]:
        record = load(tenant, connection_id)
        assert record.due_shard == refresh_schedule.shard_of(connection_id, settings.due_shards)
        assert record.due_at == cast(Any, record.expires_at) - window
        assert (record.due_at <= utcnow()) == (i % 2 == 0)

    with (
        count_aws_calls(all_threads=True) as calls,
        dynamodb_requests() as requests,
    ):  # the shard readers call from their threads
        result = sweep()
    assert result == {"enqueued": 1000, "shards": settings.due_shards}
    dynamodb_calls = {operation: n for operation, n in calls.items() if operation.startswith("dynamodb.")}
    assert set(dynamodb_calls) == {"dynamodb.Query"}, calls  # no Scan, and no item reads either
    assert {(params["TableName"], params.get("IndexName")) for _, params in requests} == {(own_table, "DueIndex")}
    per_shard = Counter(refresh_schedule.shard_of(connection_id, settings.due_shards) for connection_id in due)
    pages = sum(-(-n // 100) for n in per_shard.values())  # pages of 100 keys
    assert pages <= dynamodb_calls["dynamodb.Query"] <= pages + settings.due_shards
    assert 100 <= calls["sqs.SendMessageBatch"] <= 100 + pages

    drained = queue.drain(tenant)
    assert drained.foreign == 0
    assert drained.failures == []
    assert len(drained.processed) == 1000
    assert set(drained.processed) == due  # every due connection was queued once, and nothing else

    assert len(endpoint.requests) == 1000
    requested = refresh_tokens_requested(endpoint)
    assert requested == Counter({f"refresh-{number_of[c]}": 1 for c in due})
    assert {r.form["grant_type"] for r in endpoint.requests} == {"refresh_token"}

    for connection_id in sorted(due)[:5]:
        refreshed = load(tenant, connection_id)
        assert refreshed.token_version == 2 and refreshed.status == "connected"
        assert cast(Any, refreshed.due_at) > utcnow()
        assert stored_tokens(tenant, connection_id).access_token == "fresh-access"
        assert stored_tokens(tenant, connection_id).refresh_token == f"refresh-{number_of[connection_id]}"
    for connection_id in sorted(set(number_of) - due)[:5]:
        assert load(tenant, connection_id).token_version == 1

    assert sweep()["enqueued"] == 0
    assert queue.receive_batch() == []


# ------------------------------------------------------------------ failures


@pytest.fixture
def failing(
    flow_api: InProcessApi, endpoint: ScriptedTokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """A connected connection whose tokens expire within the refresh window; (tenant, connection id)."""
    monkeypatch.setenv("OUTBOUND_TIMEOUT_SECONDS", "0.5")
    get_settings.cache_clear()
    body = {
        "name": f"scheduled {time.time_ns()}",
        "client_id": "cid",
        "client_secret": "csecret",
        "authorization_url": "https://auth.example.com/authorize",
        "token_url": endpoint.url,
    }
    created = flow_api.call("create_connection", body=body)
    assert created.status == 201, created.text
    connection_id = created.json()["id"]
    original = token_endpoint.TokenSet("access-original", "Bearer", "refresh-original", int(time.time()) + 300, ("a",))
    tokens.store_connected(get_settings(), flow_api.tenant, connection_id, original)
    make_due(flow_api.tenant, connection_id)  # obtained long ago: due now
    return flow_api.tenant, connection_id


@dataclass(frozen=True)
class Failure:
    answer: Any
    reason: str  # the recorded status_reason
    permanent: bool = False
    retry_after: int = 0


FAILURES = {
    "500": Failure(Scripted(500, {"error": "server_error"}), "token endpoint answered HTTP 500"),
    "502": Failure(
        Scripted(502, "<html>bad gateway</html>", {"Content-Type": "text/html"}), "token endpoint answered HTTP 502"
    ),
    "503": Failure(Scripted(503, ""), "token endpoint answered HTTP 503"),
    "timeout": Failure(Scripted(200, FRESH, delay=1.5), "token endpoint timed out"),
    "reset": Failure(RESET, "token endpoint unreachable: ConnectionError"),
    "html": Failure(
        Scripted(200, "<html>maintenance</html>", {"Content-Type": "text/html"}),
        "token endpoint answered HTTP 200 without JSON",
    ),
    "error-with-200": Failure(
        Scripted(200, {"error": "temporarily_unavailable"}), "provider answered temporarily_unavailable"
    ),
    "429": Failure(
        Scripted(429, {"error": "slow_down"}, {"Retry-After": "120"}),
        "token endpoint answered HTTP 429",
        retry_after=120,
    ),
    "invalid_grant": Failure(Scripted(400, {"error": "invalid_grant"}), "invalid_grant", permanent=True),
    "invalid_client": Failure(Scripted(401, {"error": "invalid_client"}), "invalid_client", permanent=True),
    "invalid_grant-with-200": Failure(Scripted(200, {"error": "invalid_grant"}), "invalid_grant", permanent=True),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_worker_classifies_provider_failures_and_never_retries_before_the_backoff(
    failing: tuple[str, str],
    endpoint: ScriptedTokenEndpoint,
    queue: RefreshQueue,
    published_events: EventCapture,
    service_env: Resources,
    case: str,
) -> None:
    tenant, connection_id = failing
    failure = FAILURES[case]
    settings = get_settings()
    endpoint.queue(failure.answer)
    started = utcnow()

    assert sweep()["enqueued"] >= 1
    drained = queue.drain(tenant)
    assert drained.processed == [connection_id]
    assert drained.failures == []  # a failure the connection records is an outcome, not a batch item failure
    assert len(endpoint.requests) == 1
    assert endpoint.requests[0].form == {"grant_type": "refresh_token", "refresh_token": "refresh-original"}

    record = load(tenant, connection_id)
    assert stored_tokens(tenant, connection_id).refresh_token == "refresh-original"
    assert stored_tokens(tenant, connection_id).access_token == "access-original"
    assert cast(str | None, record.lease_owner) is None
    assert record.status_reason == failure.reason
    if failure.permanent:
        assert record.status == "reauthorization_required"
        assert record.consecutive_failures == 0
        assert cast(Any, record.next_attempt_at) is None
        item = raw_item(service_env.table_name, tenant, connection_id)
        assert "due_shard" not in item and "due_at" not in item  # out of the DueIndex
        (event,) = published_events.of("connection.reauthorization_required", connection_id)
        assert event["detail"]["status"] == "reauthorization_required"
        assert event["detail"]["reason"] == record.status_reason
        assert published_events.of("connection.refresh_failed", connection_id) == []
    else:
        assert record.status == "connected"
        assert record.consecutive_failures == 1
        next_attempt = cast(Any, record.next_attempt_at)
        assert record.due_at == next_attempt
        (event,) = published_events.of("connection.refresh_failed", connection_id)
        delay = event["detail"]["next_attempt_in_seconds"]
        assert event["detail"]["consecutive_failures"] == 1
        assert event["detail"]["status"] == "connected"
        assert delay >= max(failure.retry_after, settings.backoff_base_seconds // 2)
        assert next_attempt >= started + timedelta(seconds=delay)
        assert published_events.of("connection.reauthorization_required", connection_id) == []

    # No retry sooner than the backoff allows (or ever, after a permanent failure): a sweep right away
    # does not queue it, and a stale message for it reaches the worker but not the provider.
    sweep()
    assert connection_id not in queue.drain(tenant).processed
    queue.send(tenant, connection_id)
    stale = queue.drain(tenant)
    assert stale.processed == [connection_id] and stale.failures == []
    assert len(endpoint.requests) == 1
    after = load(tenant, connection_id)
    assert (after.status, after.consecutive_failures, after.token_version) == (
        record.status,
        record.consecutive_failures,
        record.token_version,
    )


def test_backoff_grows_with_each_failure_and_success_resets_it(
    failing: tuple[str, str],
    endpoint: ScriptedTokenEndpoint,
    queue: RefreshQueue,
    published_events: EventCapture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant, connection_id = failing
    monkeypatch.setenv("BACKOFF_BASE_SECONDS", "60")  # above the 30 s a provider failure asks for at least
    get_settings.cache_clear()
    delays = []
    for attempt in range(1, 4):
        endpoint.queue(Scripted(503, ""))
        sweep()
        assert queue.drain(tenant).processed == [connection_id]
        record = load(tenant, connection_id)
        assert record.consecutive_failures == attempt and record.status == "connected"
        (event,) = [
            e
            for e in published_events.of("connection.refresh_failed", connection_id)
            if e["detail"]["consecutive_failures"] == attempt
        ]
        delays.append(event["detail"]["next_attempt_in_seconds"])
        sweep()
        assert connection_id not in queue.drain(tenant).processed
        make_due(tenant, connection_id)  # the cooldown has passed
    # Exponential with jitter in the upper half of each step: [30, 60), [60, 120), [120, 240).
    assert 30 <= delays[0] < 60 <= delays[1] < 120 <= delays[2] < 240, delays
    assert len(endpoint.requests) == 3

    sweep()
    assert queue.drain(tenant).processed == [connection_id]
    record = load(tenant, connection_id)
    assert (record.status, record.consecutive_failures) == ("connected", 0)
    assert cast(Any, record.next_attempt_at) is None and cast(Any, record.failing_since) is None
    assert stored_tokens(tenant, connection_id).access_token == "fresh-access"


def test_long_transient_failure_becomes_error(
    failing: tuple[str, str],
    endpoint: ScriptedTokenEndpoint,
    queue: RefreshQueue,
    published_events: EventCapture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant, connection_id = failing
    monkeypatch.setenv("ERROR_AFTER_SECONDS", "60")
    get_settings.cache_clear()
    R = ConnectionRecord
    since = utcnow() - timedelta(minutes=2)
    load(tenant, connection_id).update(actions=[R.failing_since.set(since), R.consecutive_failures.set(3)])

    endpoint.queue(Scripted(503, ""))
    sweep()
    drained = queue.drain(tenant)
    assert drained.processed == [connection_id] and drained.failures == []
    record = load(tenant, connection_id)
    assert record.status == "error"
    assert record.consecutive_failures == 4
    assert record.failing_since == since
    assert record.due_at == record.next_attempt_at  # still retried after the cooldown
    (error,) = published_events.of("connection.error", connection_id)
    assert error["detail"]["status"] == "error"
    assert error["detail"]["reason"] == "token endpoint answered HTTP 503"
    (failed,) = published_events.of("connection.refresh_failed", connection_id)
    assert failed["detail"]["consecutive_failures"] == 4
    assert failed["detail"]["status"] == "error"
    assert stored_tokens(tenant, connection_id).refresh_token == "refresh-original"

    # Once the provider answers again, the connection recovers.
    make_due(tenant, connection_id)
    sweep()
    assert queue.drain(tenant).processed == [connection_id]
    record = load(tenant, connection_id)
    assert (record.status, record.consecutive_failures) == ("connected", 0)


def test_worker_reports_only_unexpected_errors_as_batch_item_failures(
    failing: tuple[str, str], endpoint: ScriptedTokenEndpoint, queue: RefreshQueue
) -> None:
    tenant, connection_id = failing
    queue.send_raw(json.dumps({"tenant_id": tenant}))  # no connection id: a poison message
    queue.send(tenant, "con_" + "0" * 26)  # a connection deleted since it was queued
    queue.send(tenant, connection_id)
    batch = queue.receive_batch()
    assert len(batch) == 3
    (poison,) = [m for m in batch if "connection_id" not in m["Body"]]
    failed = queue.invoke_worker(batch)
    assert failed == [poison["MessageId"]]
    assert load(tenant, connection_id).token_version == 2
    assert len(endpoint.requests) == 1


# ------------------------------------------------------------------ keep-alive


def test_tokens_without_expiry_are_kept_alive_only_when_refreshable(
    flow_api: InProcessApi,
    endpoint: ScriptedTokenEndpoint,
    queue: RefreshQueue,
    service_env: Resources,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEPALIVE_HOURS", "6")
    get_settings.cache_clear()
    tenant = flow_api.tenant
    keepalive = timedelta(hours=6)
    refreshable = insert_connected(
        tenant, endpoint.url, token_endpoint.TokenSet("a1", "Bearer", "r1", None, None), name="keep alive"
    )
    no_refresh = insert_connected(
        tenant, endpoint.url, token_endpoint.TokenSet("a2", "Bearer", None, None, None), name="plain"
    )
    expiring_no_refresh = insert_connected(
        tenant, endpoint.url, token_endpoint.TokenSet("a3", "Bearer", None, int(time.time()) + 60, None), name="short"
    )

    record = load(tenant, refreshable)
    assert record.due_shard == refresh_schedule.shard_of(refreshable, get_settings().due_shards)
    assert record.due_at == cast(Any, record.connected_at) + keepalive
    for connection_id in (no_refresh, expiring_no_refresh):
        item = raw_item(service_env.table_name, tenant, connection_id)
        assert item["status"]["S"] == "connected"
        assert "due_shard" not in item and "due_at" not in item

    make_due(tenant, refreshable)  # six hours later
    endpoint.queue(Scripted(200, {"access_token": "kept-alive", "token_type": "Bearer"}))
    sweep()
    drained = queue.drain(tenant)
    assert drained.processed == [refreshable]  # never the connections that cannot be refreshed
    assert refresh_tokens_requested(endpoint) == Counter({"r1": 1})
    record = load(tenant, refreshable)
    assert stored_tokens(tenant, refreshable).access_token == "kept-alive"
    assert record.due_at == cast(Any, record.refreshed_at) + keepalive


# ------------------------------------------------------------------ race with on-demand retrieval


def refreshes(provider: OidcProvider) -> int:
    return int(provider.stats()["token_requests"]["by_grant_type"].get("refresh_token", 0))


def get_token(tenant: str, connection_id: str, **fields: Any) -> dict[str, Any]:
    event = {"tenant_id": tenant, "connection_id": connection_id} | fields
    result: dict[str, Any] = load_handler("get_token")(event, LambdaContext())
    return result


def wait_for_lease(tenant: str, connection_id: str) -> None:
    """Until someone holds the refresh lease (and talks to the provider, whose answer is held back)."""
    deadline = time.monotonic() + 10
    while cast(str | None, load(tenant, connection_id).lease_owner) is None:
        assert time.monotonic() < deadline, "nobody took the refresh lease"
        time.sleep(0.005)


@pytest.mark.parametrize("first", ["together", "scheduled", "on-demand"])
def test_scheduled_refresh_racing_forced_retrievals_reaches_the_provider_once(
    flow_api: InProcessApi,
    provider: OidcProvider,
    queue: RefreshQueue,
    service_logs: LogCapture,
    monkeypatch: pytest.MonkeyPatch,
    first: str,
) -> None:
    # The provider's tokens live ten minutes; with a window shorter than that, fresh tokens are not due.
    # (With the default fifteen they are due at once: see the next test.)
    monkeypatch.setenv("REFRESH_WINDOW_MINUTES", "5")
    get_settings.cache_clear()
    tenant = flow_api.tenant
    connection = create_connection(flow_api, provider)
    connect(flow_api, provider, connection)
    connection_id = connection["id"]
    old = stored_tokens(tenant, connection_id)
    age_tokens(tenant, connection_id)
    make_due(tenant, connection_id)

    sweep()
    messages = queue.take(tenant)
    assert len(messages) == 1

    before = refreshes(provider)
    barrier = threading.Barrier(21 if first == "together" else 20)
    results: list[dict[str, Any]] = []
    worker_failures: list[str] = []

    def on_demand() -> None:
        barrier.wait()
        results.append(get_token(tenant, connection_id, force_refresh=True))

    def worker() -> None:
        if first == "together":
            barrier.wait()
        worker_failures.extend(queue.invoke_worker(messages))

    callers = [threading.Thread(target=on_demand) for _ in range(20)]
    scheduled = threading.Thread(target=worker)
    provider.set_token_endpoint_delay(300)
    try:
        if first == "together":
            for thread in [*callers, scheduled]:
                thread.start()
        elif first == "scheduled":
            scheduled.start()
            wait_for_lease(tenant, connection_id)
            for thread in callers:
                thread.start()
        else:
            for thread in callers:
                thread.start()
            wait_for_lease(tenant, connection_id)
            scheduled.start()
        for thread in [*callers, scheduled]:
            thread.join()
    finally:
        provider.set_token_endpoint_delay(0)

    assert refreshes(provider) == before + 1
    assert worker_failures == []  # losing the race is an outcome, not a failure to retry
    outcome = json.loads(next(line for line in service_logs.lines if '"scheduled refresh"' in line))["outcome"]
    expected = {"scheduled": {"refreshed"}, "on-demand": {"provider_unavailable"}}
    assert outcome in expected.get(first, {"refreshed", "provider_unavailable", "not_due"})
    assert all("access_token" in r for r in results), results
    assert len({r["access_token"] for r in results}) == 1
    final = stored_tokens(tenant, connection_id)
    assert final.access_token == results[0]["access_token"] != old.access_token
    assert provider.introspect(final.access_token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True
    assert provider.introspect(final.refresh_token or "", BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True
    record = load(tenant, connection_id)
    assert record.status == "connected" and record.token_version == 2
    assert cast(Any, record.due_at) > utcnow()


def test_message_queued_before_an_on_demand_refresh_does_not_refresh_again(
    flow_api: InProcessApi, provider: OidcProvider, queue: RefreshQueue, service_logs: LogCapture
) -> None:
    """Default settings: the provider's tokens live ten minutes, less than the refresh window of fifteen."""
    tenant = flow_api.tenant
    connection = create_connection(flow_api, provider)
    connect(flow_api, provider, connection)
    connection_id = connection["id"]
    age_tokens(tenant, connection_id)
    sweep()
    messages = queue.take(tenant)
    assert len(messages) == 1

    before = refreshes(provider)
    on_demand = get_token(tenant, connection_id, force_refresh=True)
    assert refreshes(provider) == before + 1
    # The sweep's message arrives after the on-demand refresh: the refresh it asked for has happened.
    assert queue.invoke_worker(messages) == []
    outcome = json.loads(next(line for line in service_logs.lines if '"scheduled refresh"' in line))["outcome"]
    assert outcome == "not_due"
    assert refreshes(provider) == before + 1
    assert stored_tokens(tenant, connection_id).access_token == on_demand["access_token"]


def test_a_sweep_reads_its_shards_in_the_invocations_context_and_stops_at_an_error(service_env: Resources) -> None:
    """The shard readers run in threads: each sees the invocation's deadline, at most SHARD_READERS read at
    once, and a failing shard ends the sweep: the readers already reading finish, no further shard is read,
    and its error is raised."""
    from oauth_connections.core import budget
    from oauth_connections.storage import due
    from oauth_connections.storage.connections import CONNECTIONS

    bind_table(service_env.table_name)
    lock = threading.Lock()
    handled: list[float | None] = []
    together = threading.Barrier(due.SHARD_READERS, timeout=10)  # only as many readers as SHARD_READERS meet

    def handle(keys: list[tuple[str, str]]) -> int:
        with lock:
            handled.append(budget.remaining_seconds())
            first = len(handled) == 1
        together.wait()
        if first:
            raise RuntimeError("this shard failed")
        time.sleep(0.1)  # the others finish after the failure
        return len(keys) + 1

    shards = [f"NOTHING#{number:03d}" for number in range(40)]  # empty shards: one empty page each
    with budget.invocation(LambdaContext()), pytest.raises(RuntimeError, match="this shard failed"):
        due.sweep_due(CONNECTIONS, shards, utcnow(), 100, handle)
    # The readers under way finished; none of them, nor anything else, started another shard.
    assert len(handled) == due.SHARD_READERS
    assert all(left is not None and left > 0 for left in handled)

    read: list[str] = []

    def count(keys: list[tuple[str, str]]) -> int:
        read.append("page")
        return len(keys)

    assert due.sweep_due(CONNECTIONS, shards, utcnow(), 100, count) == 0
    assert len(read) == len(shards)  # without an error, every shard is read
