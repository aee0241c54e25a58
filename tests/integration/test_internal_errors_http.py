"""Internal failures through the local API: a function given a setting it cannot parse, or a table or key
the embedded AWS does not have, answers 500 in the service's error shape with the API request id, and
logs the failure with its trace under that id. Nothing is mocked: the functions run as deployed, only
their environment is wrong."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.stack_fixtures import ApiClient

MISSING_KEY_ARN = "arn:aws:kms:eu-central-1:123456789012:key/00000000-0000-0000-0000-000000000000"
BROKEN = {
    # Read by the body-size check, before any route runs.
    "ListConnectionsFunction": {"MAX_BODY_BYTES": "sixty-four kilobytes"},
    # DynamoDB refuses: the function's table does not exist.
    "GetConnectionFunction": {"CONNECTIONS_TABLE_NAME": "no-such-table"},
    "OAuthCallbackFunction": {"CONNECTIONS_TABLE_NAME": "no-such-table"},
    # KMS refuses: the key that would encrypt the PKCE verifier does not exist.
    "AuthorizeRedirectFunction": {"ENCRYPTION_KEY_ARN": MISSING_KEY_ARN},
}


@pytest.fixture(scope="module")
def broken_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=Path(tmp_path_factory.mktemp("devstack-broken")),
        function_env_overrides=BROKEN,
        schedules=False,
        echo_logs=False,
    ) as running:
        yield running


@pytest.fixture
def tenant_api(broken_stack: Stack) -> ApiClient:
    return ApiClient(broken_stack).as_tenant(f"broken-{uuid.uuid4().hex[:12]}")


def _logged_failures(stack: Stack, function: str, request_id: str) -> list[dict[str, Any]]:
    """The function's "request failed unexpectedly" lines of one request; the runtime forwards a
    function's output from a pipe, so a line may land a moment after the answer."""
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in stack.function_logs(function) if request_id in line and line.startswith("{")]
        failures = [e for e in map(json.loads, lines) if e.get("message") == "request failed unexpectedly"]
        if failures or time.monotonic() > deadline:
            return failures
        time.sleep(0.1)


def assert_internal_error(stack: Stack, function: str, response: requests.Response) -> None:
    assert response.status_code == 500, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    request_id = response.headers["apigw-requestid"]
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": response.json()["error"]["message"],
            "correlation_id": request_id,
        }
    }
    failures = _logged_failures(stack, function, request_id)
    assert len(failures) == 1, stack.function_logs(function)
    assert failures[0]["level"] == "ERROR"
    assert failures[0]["correlation_id"] == request_id
    assert failures[0]["exception"].startswith("Traceback (most recent call last)")


def connection(api: ApiClient) -> dict[str, Any]:
    response = api.post(
        "/connections",
        json={
            "name": f"crm {uuid.uuid4().hex[:8]}",
            "client_id": "crm-client",
            "client_secret": "crm-secret",
            "authorization_url": "https://login.crm.example.com/oauth/authorize",
            "token_url": "https://login.crm.example.com/oauth/token",
        },
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_a_setting_the_function_cannot_parse(broken_stack: Stack, tenant_api: ApiClient) -> None:
    assert_internal_error(broken_stack, "ListConnectionsFunction", tenant_api.get("/connections"))


def test_dynamodb_refusing_in_a_route(broken_stack: Stack, tenant_api: ApiClient) -> None:
    created = connection(tenant_api)
    assert_internal_error(broken_stack, "GetConnectionFunction", tenant_api.get(f"/connections/{created['id']}"))


def test_kms_refusing_in_the_authorize_redirect(broken_stack: Stack, tenant_api: ApiClient) -> None:
    created = connection(tenant_api)
    started = tenant_api.post(f"/connections/{created['id']}/authorize", json={"return_url": "http://127.0.0.1:9/done"})
    assert started.status_code == 200, started.text
    response = requests.get(started.json()["redirect_url"], allow_redirects=False, timeout=60)
    assert_internal_error(broken_stack, "AuthorizeRedirectFunction", response)
    assert "set-cookie" not in response.headers


def test_dynamodb_refusing_in_the_callback(broken_stack: Stack) -> None:
    response = requests.get(
        f"{broken_stack.api_url}/oauth2/callback",
        params={"state": "a-state", "code": "a-code"},
        allow_redirects=False,
        timeout=60,
    )
    assert_internal_error(broken_stack, "OAuthCallbackFunction", response)
