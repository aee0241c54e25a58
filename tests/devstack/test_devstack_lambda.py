"""The local Lambda endpoint (Invoke API through boto3) and the execution-environment model."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devstack import Stack
from devstack.config import STACK_NAME


def _invoke(stack: Stack, name: str, payload: Any, **kwargs: Any) -> dict[str, Any]:
    response: dict[str, Any] = stack.lambda_client().invoke(
        FunctionName=name, Payload=json.dumps(payload).encode(), **kwargs
    )
    return response


@pytest.mark.parametrize("name_kind", ["logical-id", "name", "arn"])
def test_request_response_by_logical_id_name_and_arn(fixture_stack: Stack, name_kind: str) -> None:
    spec = fixture_stack.functions["EchoFunction"]
    name = {"logical-id": "EchoFunction", "name": spec.name, "arn": spec.arn}[name_kind]
    response = _invoke(fixture_stack, name, {"return": {"answer": 42}})
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    assert json.loads(response["Payload"].read()) == {"answer": 42}


def test_context_reports_the_invoked_arn(fixture_stack: Stack) -> None:
    spec = fixture_stack.functions["EchoFunction"]
    response = _invoke(fixture_stack, spec.arn, {"ping": 1})
    body = json.loads(response["Payload"].read())
    assert body["context"]["invoked_function_arn"] == spec.arn
    assert spec.arn == f"arn:aws:lambda:eu-central-1:123456789012:function:{STACK_NAME}-EchoFunction"


def test_unhandled_error_shape(fixture_stack: Stack) -> None:
    response = _invoke(fixture_stack, "EchoFunction", {"raise": "boom"})
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorMessage"] == "boom"
    assert error["errorType"] == "ValueError"
    assert isinstance(error["stackTrace"], list)
    assert any("app.py" in frame for frame in error["stackTrace"])
    assert error["requestId"]
    # A handler exception does not end the execution environment.
    assert _invoke(fixture_stack, "EchoFunction", {"return": 1})["StatusCode"] == 200


def test_event_and_dry_run_invocations(fixture_stack: Stack) -> None:
    marker = f"event-{time.time_ns()}"
    response = _invoke(fixture_stack, "EchoFunction", {"marker": marker}, InvocationType="Event")
    assert response["StatusCode"] == 202
    deadline = time.monotonic() + 10
    while not any(marker in line for line in fixture_stack.function_logs("EchoFunction")):
        assert time.monotonic() < deadline, "the Event invocation did not run"
        time.sleep(0.05)
    assert _invoke(fixture_stack, "EchoFunction", {}, InvocationType="DryRun")["StatusCode"] == 204


def test_unknown_function_is_resource_not_found(fixture_stack: Stack) -> None:
    with pytest.raises(ClientError) as raised:
        _invoke(fixture_stack, "NoSuchFunction", {})
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_invalid_json_payload(fixture_stack: Stack) -> None:
    with pytest.raises(ClientError) as raised:
        fixture_stack.lambda_client().invoke(FunctionName="EchoFunction", Payload=b"{not json")
    assert raised.value.response["Error"]["Code"] == "InvalidRequestContentException"


def test_concurrent_invocations_run_in_parallel_workers(fixture_stack: Stack) -> None:
    client = fixture_stack.lambda_client()

    def sleep(_: int) -> dict[str, Any]:
        response = client.invoke(FunctionName="SleepFunction", Payload=json.dumps({"seconds": 1}).encode())
        assert "FunctionError" not in response
        result: dict[str, Any] = json.loads(response["Payload"].read())
        return result

    with ThreadPoolExecutor(20) as pool:
        started = time.monotonic()
        first = list(pool.map(sleep, range(20)))
        cold = time.monotonic() - started
        started = time.monotonic()
        second = list(pool.map(sleep, range(20)))
        warm = time.monotonic() - started
    assert len({result["pid"] for result in first}) == 20  # one execution environment per concurrent call
    assert cold < 6, cold  # 20 x 1 s in parallel (cold starts included), not 20 s
    assert warm < 3, warm
    assert {result["pid"] for result in second} <= {result["pid"] for result in first}  # warm workers reused
    assert fixture_stack.worker_count("SleepFunction") >= 20


def test_timeout_kills_the_worker(fixture_stack: Stack) -> None:
    started = time.monotonic()
    response = _invoke(fixture_stack, "SleepFunction", {"seconds": 30})
    elapsed = time.monotonic() - started
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 2.00 seconds" in error["errorMessage"]
    assert 1.9 < elapsed < 5
    follow_up = json.loads(_invoke(fixture_stack, "SleepFunction", {"seconds": 0})["Payload"].read())
    assert follow_up["slept"] == 0
    assert 0 < follow_up["remaining_ms"] <= 2000
