"""When AWS itself fails: the functions of the local stack reach the embedded AWS through a fault proxy
(tests/support/aws_fault_proxy.py) that can make it, or one of its services, hang, refuse connections,
answer 2 s late or throttle.

Every caller gets the documented answer well inside its deadline (GetTokenFunction and the API:
service_unavailable, 503 with Retry-After; scheduled jobs: a quick function error, or a batch item
failure whose message is delivered again), and nothing stored changes because AWS was slow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from devstack import FunctionError, Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from oauth_connections.storage.due import SHARD_READERS
from tests.support.aws_fault_proxy import AwsFaultProxy, Mode
from tests.support.provider import AUTH_METHOD_CLIENTS, OidcProvider, standard_clients
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import (
    age_tokens,
    authorize,
    callback_url,
    connect,
    create_connection,
    get_token,
    invoke,
    new_tenant,
    query_of,
    refreshes,
    stored_item,
)

FAULTS: list[Mode] = ["hang", "refuse", "slow", "throttle"]
AWS_TIMEOUT_SECONDS = 1
AWS_MAX_ATTEMPTS = 2
# A failing call gives up after its attempts (connect and read timeouts) and at most a second of backoff;
# the rest is the invocation's own time on a loaded machine. Still well below botocore's default read
# timeout (60 s) and the functions' own timeouts (10 s and more), so an unapplied setting fails the bound.
ANSWER_WITHIN_SECONDS = AWS_MAX_ATTEMPTS * AWS_TIMEOUT_SECONDS + 1 + 4.5
# The callback's own work, plus publishing given up after its time cap (events.py).
EVENT_GIVEN_UP_WITHIN_SECONDS = 8.0
RETURN_URL = "http://127.0.0.1:5173/done"
REDELIVERY_SECONDS = 2
QUEUE_WAIT_SECONDS = 30.0


@pytest.fixture(scope="module")
def aws_proxy() -> Iterator[AwsFaultProxy]:
    with AwsFaultProxy() as proxy:
        yield proxy


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory, aws_proxy: AwsFaultProxy) -> Iterator[Stack]:
    """The project's template whose functions (not the provisioner, not the queue pollers) call AWS through
    the proxy."""
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=tmp_path_factory.mktemp("devstack-faults"),
        parameter_overrides={"AwsTimeoutSeconds": AWS_TIMEOUT_SECONDS, "AwsMaxAttempts": AWS_MAX_ATTEMPTS},
        env_overrides={"AWS_ENDPOINT_URL": aws_proxy.url},
        schedules=False,
        with_provider=False,
    ) as running:
        aws_proxy.forward_to(running.aws_url)
        yield running


@pytest.fixture(scope="module")
def fault_provider(fault_stack: Stack) -> Iterator[OidcProvider]:
    with OidcProvider(standard_clients([callback_url(fault_stack)])) as running:
        yield running


@dataclass(frozen=True)
class Connected:
    stack: Stack
    api: ApiClient
    tenant: str
    connection_id: str

    def item(self) -> dict[str, Any]:
        return stored_item(self.stack, self.tenant, self.connection_id)


@pytest.fixture(scope="module")
def connected(fault_stack: Stack, fault_provider: OidcProvider) -> Connected:
    tenant = new_tenant("faults")
    api = ApiClient(fault_stack).as_tenant(tenant)
    connection = create_connection(api, fault_provider)
    connect(api, connection["id"], RETURN_URL)
    return Connected(fault_stack, api, tenant, connection["id"])


def assert_unavailable_answer(response: requests.Response, seconds: float) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "service_unavailable", response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert seconds < ANSWER_WITHIN_SECONDS, seconds


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - started


@pytest.mark.parametrize("fault", FAULTS)
def test_warm_retrieval_answers_service_unavailable(
    connected: Connected, aws_proxy: AwsFaultProxy, fault: Mode
) -> None:
    warm = get_token(connected.stack, connected.tenant, connected.connection_id)
    before = connected.item()
    payload = {"tenant_id": connected.tenant, "connection_id": connected.connection_id}
    with aws_proxy.fault(fault):
        result = invoke(connected.stack.lambda_client(), payload)
    assert result.status == 200 and result.function_error is None, result
    error = result.payload["error"]
    assert error["code"] == "service_unavailable", result
    assert error["retry_after_seconds"] >= 1
    assert result.seconds < ANSWER_WITHIN_SECONDS, result
    assert connected.item() == before
    assert get_token(connected.stack, connected.tenant, connected.connection_id)["access_token"] == warm["access_token"]


@pytest.mark.parametrize("fault", ["throttle", "hang"])
def test_key_service_failing_inside_a_refresh_is_not_the_providers_fault(
    fault_stack: Stack, fault_provider: OidcProvider, aws_proxy: AwsFaultProxy, fault: Mode
) -> None:
    tenant = new_tenant("faults")
    api = ApiClient(fault_stack).as_tenant(tenant)
    connection = create_connection(api, fault_provider)
    connect(api, connection["id"], RETURN_URL)
    # The client secret entered again is sealed under a new key of its own (the tokens keep theirs until
    # their next write), which GetTokenFunction has not opened.
    secret = AUTH_METHOD_CLIENTS["client_secret_basic"][1]
    patched = api.patch(f"/connections/{connection['id']}", json={"client_secret": secret})
    assert patched.status_code == 200, patched.text
    first = get_token(fault_stack, tenant, connection["id"])  # the tokens' key is now cached
    age_tokens(fault_stack, tenant, connection["id"])
    before = stored_item(fault_stack, tenant, connection["id"])
    refreshed_before = refreshes(fault_provider)
    payload = {"tenant_id": tenant, "connection_id": connection["id"], "force_refresh": True}
    with aws_proxy.fault(fault, "kms"):  # the client secret needs KMS: its key is not cached
        result = invoke(fault_stack.lambda_client(), payload)
    assert result.function_error is None, result
    assert result.payload["error"]["code"] == "service_unavailable", result
    assert result.seconds < ANSWER_WITHIN_SECONDS, result
    after = stored_item(fault_stack, tenant, connection["id"])
    assert refreshes(fault_provider) == refreshed_before
    # Only the refresh lease was taken (and so the item's version moved): no failure, no backoff, same tokens.
    lease = {"lease_owner", "lease_expires_at", "version"}
    assert {k: v for k, v in after.items() if k not in lease} == {k: v for k, v in before.items() if k not in lease}
    assert after["status"]["S"] == "connected" and "next_attempt_at" not in after and "status_reason" not in after
    assert get_token(fault_stack, tenant, connection["id"])["access_token"] == first["access_token"]


@pytest.mark.parametrize("fault", FAULTS)
def test_api_read_answers_503(connected: Connected, aws_proxy: AwsFaultProxy, fault: Mode) -> None:
    path = f"/connections/{connected.connection_id}"
    assert connected.api.get(path).status_code == 200  # a warm function
    with aws_proxy.fault(fault):
        response, seconds = timed(connected.api.get, path)
    assert_unavailable_answer(response, seconds)
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("fault", FAULTS)
def test_api_write_answers_503_and_changes_nothing(connected: Connected, aws_proxy: AwsFaultProxy, fault: Mode) -> None:
    path = f"/connections/{connected.connection_id}"
    assert connected.api.get(path).status_code == 200
    before = connected.item()
    with aws_proxy.fault(fault):
        response, seconds = timed(connected.api.patch, path, json={"description": f"written during {fault}"})
    assert_unavailable_answer(response, seconds)
    after = connected.item()
    assert after == before
    assert after["status"]["S"] == "connected"


def test_callback_answers_503_and_succeeds_when_retried(
    fault_stack: Stack, fault_provider: OidcProvider, aws_proxy: AwsFaultProxy
) -> None:
    tenant = new_tenant("faults")
    api = ApiClient(fault_stack).as_tenant(tenant)
    connection = create_connection(api, fault_provider)
    _, result = authorize(api, connection["id"], RETURN_URL)
    with aws_proxy.fault("hang"):
        response, seconds = timed(result.follow)
    assert_unavailable_answer(response, seconds)
    assert stored_item(fault_stack, tenant, connection["id"])["status"]["S"] == "pending"
    retried = result.follow()  # the same callback, once AWS answers again: nothing of the flow was lost
    assert retried.status_code == 302, retried.text
    assert query_of(retried.headers["Location"])["status"] == "connected"
    assert get_token(fault_stack, tenant, connection["id"])["token_type"].lower() == "bearer"


@pytest.mark.parametrize(
    ("fault", "problem"),
    [("throttle", "ThrottlingException"), ("hang", "ReadTimeoutError"), ("fail_entries", "InternalFailure")],
)
def test_a_failed_event_does_not_fail_the_stored_connection(
    fault_stack: Stack, fault_provider: OidcProvider, aws_proxy: AwsFaultProxy, fault: Mode, problem: str
) -> None:
    tenant = new_tenant("faults")
    api = ApiClient(fault_stack).as_tenant(tenant)
    connection = create_connection(api, fault_provider)
    _, result = authorize(api, connection["id"], RETURN_URL)
    logged = len(fault_stack.function_logs("OAuthCallbackFunction"))
    with aws_proxy.fault(fault, "events"):  # the connection.connected event follows the stored tokens
        response, seconds = timed(result.follow)
    assert response.status_code == 302, response.text
    assert query_of(response.headers["Location"])["status"] == "connected"
    assert seconds < EVENT_GIVEN_UP_WITHIN_SECONDS, seconds
    assert stored_item(fault_stack, tenant, connection["id"])["status"]["S"] == "connected"
    lines = [
        json.loads(line) for line in fault_stack.function_logs("OAuthCallbackFunction")[logged:] if line.startswith("{")
    ]
    [failure] = [line for line in lines if line.get("message") == "event not published"]
    assert failure["detail_type"] == "connection.connected" and failure["problem"] == problem
    assert any(line.get("EventsNotPublished") == [1.0] for line in lines)
    assert get_token(fault_stack, tenant, connection["id"])["token_type"].lower() == "bearer"


@pytest.mark.parametrize("fault", FAULTS)
def test_sweep_fails_quickly(fault_stack: Stack, aws_proxy: AwsFaultProxy, fault: Mode) -> None:
    fault_stack.fire_schedule("RefreshSchedulerFunction")  # a warm function
    seen = aws_proxy.seen["dynamodb"]
    started = time.monotonic()
    with aws_proxy.fault(fault), pytest.raises(FunctionError) as failed:
        fault_stack.fire_schedule("RefreshSchedulerFunction")
    assert time.monotonic() - started < ANSWER_WITHIN_SECONDS
    assert failed.value.error["errorType"] == "QueryError", failed.value.error  # not a timeout of the function
    # The shards being read when the first one failed, each query tried AwsMaxAttempts times; no shard
    # after them was started.
    tried = aws_proxy.seen["dynamodb"] - seen
    assert tried <= SHARD_READERS * AWS_MAX_ATTEMPTS, tried
    if fault != "refuse":  # a closed port lets few requests, or none, reach the proxy
        assert tried >= AWS_MAX_ATTEMPTS, tried


def reports(stack: Stack, function: str) -> int:
    """How many invocations of `function` have ended (one REPORT line each)."""
    return sum(line.startswith("REPORT RequestId:") for line in stack.function_logs(function))


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + QUEUE_WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {QUEUE_WAIT_SECONDS} s"
        time.sleep(0.2)


def stored_runs(stack: Stack, tenant: str, feed_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.boto3_client("dynamodb").query(
        TableName=stack.physical_ids["ConnectionsTable"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"FEEDRUNS#{tenant}#{feed_id}"}},
        ConsistentRead=True,
    )["Items"]
    return items


def test_feed_fetch_fails_cleanly_and_its_message_is_delivered_again(
    connected: Connected, aws_proxy: AwsFaultProxy
) -> None:
    stack = connected.stack
    # Nothing listens on the discard port: once AWS is back, the run itself fails and is recorded.
    created = connected.api.post(
        "/feeds", json={"name": "outage feed", "url": "http://127.0.0.1:9/catalog.xml", "format": "yml"}
    )
    assert created.status_code == 201, created.text
    feed_id = created.json()["id"]
    sqs = stack.boto3_client("sqs")
    queue = stack.physical_ids["FeedFetchQueue"]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": str(REDELIVERY_SECONDS)})
    message = {"tenant_id": connected.tenant, "feed_id": feed_id, "trigger": "manual"}
    before = reports(stack, "FeedFetchFunction")
    with aws_proxy.fault("hang"):
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(message))  # what the run-now route queues
        wait_for(lambda: reports(stack, "FeedFetchFunction") > before, "a fetch during the outage")
        assert stored_runs(stack, connected.tenant, feed_id) == []
    wait_for(lambda: len(stored_runs(stack, connected.tenant, feed_id)) == 1, "the redelivered fetch")
    wait_for(lambda: stored_runs(stack, connected.tenant, feed_id)[0]["status"]["S"] != "running", "the end of the run")
    [run] = stored_runs(stack, connected.tenant, feed_id)
    assert run["status"]["S"] == "failed", run
    assert run["trigger"]["S"] == "manual"
