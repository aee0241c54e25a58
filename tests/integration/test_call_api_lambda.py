"""CallApiFunction through the local Lambda Invoke API, against a scripted API and the real provider: the
refresh after a 401, the rate-limit window other callers meet, redirects, bad requests, a Node.js caller."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from scripted_api import ScriptedApi, Step, scripted_api

from devstack import Stack
from devstack.config import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, NODE_DIR, REGION, REPO_ROOT
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import (
    age_tokens,
    connect,
    create_connection,
    invoke,
    new_tenant,
    refreshes,
    stored_datetime,
    stored_item,
)

CALL_API = "CallApiFunction"
RETURN_URL = "http://127.0.0.1:5173/done"
NODE = NODE_DIR / "node_modules" / ".bin" / "node"
NODE_SCRIPT = REPO_ROOT / "clients" / "node" / "call_api.mjs"


@dataclass(frozen=True)
class Connected:
    stack: Stack
    tenant: str
    connection_id: str
    api: ApiClient

    def call(self, **fields: Any) -> dict[str, Any]:
        result = invoke(
            self.stack.lambda_client(),
            {"tenant_id": self.tenant, "connection_id": self.connection_id} | fields,
            function=CALL_API,
        )
        assert result.status == 200 and result.function_error is None, result
        assert isinstance(result.payload, dict), result
        return result.payload


@pytest.fixture
def api_server() -> Iterator[ScriptedApi]:
    with scripted_api() as server:
        yield server


@pytest.fixture
def other_server() -> Iterator[ScriptedApi]:
    with scripted_api() as server:
        yield server


@pytest.fixture
def connected(api: ApiClient, provider: OidcProvider, api_server: ScriptedApi) -> Connected:
    tenant = new_tenant("call")
    client = api.as_tenant(tenant)
    connection = create_connection(client, provider, allowed_urls=[f"{api_server.base}/api/"])
    connect(client, connection["id"], RETURN_URL)
    return Connected(api.stack, tenant, connection["id"], client)


def active(provider: OidcProvider, authorization: str) -> bool:
    token = authorization.removeprefix("Bearer ")
    return provider.introspect(token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True


def test_a_call_with_the_connections_token(
    connected: Connected, api_server: ScriptedApi, provider: OidcProvider
) -> None:
    api_server.script("/api/me", Step(200, {"Content-Type": "application/json"}, b'{"id": "u1"}'))
    answer = connected.call(method="GET", path="/me", query={"fields": "id"})
    assert (answer["status"], answer["body"], answer["attempts"], answer["refreshed"]) == (
        200,
        '{"id": "u1"}',
        1,
        False,
    )
    assert answer["headers"]["content-type"] == "application/json"
    [seen] = api_server.seen
    assert seen.path == "/api/me?fields=id"
    assert active(provider, seen.headers["authorization"])
    assert "access_token" not in json.dumps(answer)


def test_401_refreshes_once_and_the_retry_succeeds(
    connected: Connected, api_server: ScriptedApi, provider: OidcProvider
) -> None:
    age_tokens(connected.stack, connected.tenant, connected.connection_id)  # past the force-refresh debounce
    before = refreshes(provider)
    api_server.script("/api/me", Step(401), Step(200, {"Content-Type": "text/plain"}, b"me"))
    answer = connected.call(method="GET", path="me")
    assert (answer["status"], answer["body"], answer["attempts"], answer["refreshed"]) == (200, "me", 2, True)
    assert refreshes(provider) == before + 1
    first, second = api_server.authorizations
    assert first != second
    assert active(provider, second)


def test_a_429_opens_a_window_other_callers_meet_without_calling(connected: Connected, api_server: ScriptedApi) -> None:
    api_server.script("/api/contacts", Step(429, {"Retry-After": "120"}))
    first = connected.call(method="GET", path="/contacts", timeout_seconds=5)
    assert first["error"]["code"] == "rate_limited"
    assert first["error"]["retry_after_seconds"] == 120
    window = stored_datetime(
        stored_item(connected.stack, connected.tenant, connected.connection_id), "rate_limited_until"
    )
    assert window is not None and timedelta(seconds=110) < window - datetime.now(UTC) <= timedelta(seconds=120)

    second = connected.call(method="GET", path="/contacts")
    assert second["error"]["code"] == "rate_limited"
    assert 100 < second["error"]["retry_after_seconds"] <= 120
    assert len(api_server.seen) == 1  # the second caller never reached the provider


def test_a_redirect_off_the_allowed_urls_is_not_followed(
    connected: Connected, api_server: ScriptedApi, other_server: ScriptedApi
) -> None:
    api_server.script("/api/contacts", Step(302, {"Location": f"{other_server.base}/api/contacts"}))
    answer = connected.call(method="GET", path="/contacts")
    assert answer["error"]["code"] == "url_not_allowed"
    assert other_server.seen == []
    assert len(api_server.seen) == 1


@pytest.mark.parametrize(
    ("fields", "mentioned"),
    [
        ({"method": "GET"}, "url"),
        ({"method": "GET", "path": "/x", "url": "http://127.0.0.1:1/api/x"}, "url"),
        ({"method": "GET", "path": "/x", "headers": {"Authorization": "Bearer mine"}}, "Authorization"),
        ({"method": "GET", "path": "/x", "headers": {"Host": "elsewhere"}}, "Host"),
        ({"method": "POST", "path": "/x", "json": {}, "body": "x"}, "body"),
        ({"method": "POST", "path": "/x", "body_base64": "not base64!"}, "body_base64"),
        ({"method": "TRACE", "path": "/x"}, "method"),
        ({"method": "GET", "path": "/x", "timeout_seconds": 0}, "timeout_seconds"),
        ({"method": "GET", "path": "/x", "expect": {"body_pattern": "("}}, "body_pattern"),
    ],
)
def test_a_bad_request_is_invalid_and_sends_nothing(
    connected: Connected, api_server: ScriptedApi, fields: dict[str, Any], mentioned: str
) -> None:
    answer = connected.call(**fields)
    assert answer["error"]["code"] == "invalid_request", answer
    assert mentioned in answer["error"]["message"]
    assert api_server.seen == []


def test_a_url_outside_allowed_urls_and_another_tenant(connected: Connected, api_server: ScriptedApi) -> None:
    assert connected.call(method="GET", url="http://127.0.0.1:1/api/x")["error"]["code"] == "url_not_allowed"
    intruder = Connected(connected.stack, new_tenant("intruder"), connected.connection_id, connected.api)
    assert intruder.call(method="GET", path="/me")["error"]["code"] == "not_found"
    assert api_server.seen == []


def test_last_used_at_is_written_only_when_stale(connected: Connected, api_server: ScriptedApi) -> None:
    api_server.script("/api/me", Step(200))
    stack, key = connected.stack, (connected.tenant, connected.connection_id)
    connected.call(method="GET", path="/me")
    first = stored_item(stack, *key)
    used = stored_datetime(first, "last_used_at")
    assert used is not None and datetime.now(UTC) - used < timedelta(minutes=1)
    connected.call(method="GET", path="/me")
    assert stored_item(stack, *key)["version"] == first["version"]  # fresh: no write on the warm path

    eleven_minutes_ago = (datetime.now(UTC) - timedelta(minutes=11)).strftime("%Y-%m-%dT%H:%M:%S.%f%z")
    stack.boto3_client("dynamodb").update_item(
        TableName=stack.physical_ids["ConnectionsTable"],
        Key={"pk": {"S": f"TENANT#{connected.tenant}"}, "sk": {"S": f"CONNECTION#{connected.connection_id}"}},
        UpdateExpression="SET last_used_at = :then",
        ExpressionAttributeValues={":then": {"S": eleven_minutes_ago}},
    )
    token = invoke(stack.lambda_client(), {"tenant_id": connected.tenant, "connection_id": connected.connection_id})
    assert "access_token" in token.payload  # a token retrieval is a use too
    again = stored_datetime(stored_item(stack, *key), "last_used_at")
    assert again is not None and datetime.now(UTC) - again < timedelta(minutes=1)


def test_a_nodejs_function_calls_through_the_sdk(connected: Connected, api_server: ScriptedApi) -> None:
    api_server.script("/api/me", Step(200, {"Content-Type": "application/json"}, b'{"id": "u1"}'))
    request = {"tenant_id": connected.tenant, "connection_id": connected.connection_id, "method": "GET", "path": "/me"}
    result = subprocess.run(
        [str(NODE), str(NODE_SCRIPT), json.dumps(request)],
        env={
            "PATH": "/usr/bin:/bin",
            "AWS_ENDPOINT_URL_LAMBDA": connected.stack.lambda_url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert (answer["status"], answer["body"]) == (200, '{"id": "u1"}')
    assert len(api_server.seen) == 1


def test_the_api_shows_the_last_use_and_lists_the_unused(
    connected: Connected, api_server: ScriptedApi, provider: OidcProvider
) -> None:
    unused = create_connection(connected.api, provider)
    before = datetime.now(UTC)
    assert connected.api.get(f"/connections/{connected.connection_id}").json()["last_used_at"] is None
    api_server.script("/api/me", Step(200))
    connected.call(method="GET", path="/me")
    shown = connected.api.get(f"/connections/{connected.connection_id}").json()["last_used_at"]
    assert shown is not None and datetime.fromisoformat(shown) >= before - timedelta(seconds=1)

    listed = connected.api.get("/connections", params={"unused_since": before.isoformat()})
    assert listed.status_code == 200, listed.text
    assert [item["id"] for item in listed.json()["items"]] == [unused["id"]]
    everything = connected.api.get("/connections").json()["items"]
    assert {item["id"] for item in everything} == {unused["id"], connected.connection_id}
    bad = connected.api.get("/connections", params={"unused_since": "yesterday"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "validation_error"


def test_the_connection_test_through_the_api(connected: Connected, api_server: ScriptedApi) -> None:
    path = f"/connections/{connected.connection_id}"
    assert connected.api.post(f"{path}/test").json()["error"]["code"] == "no_test_url"
    patched = connected.api.patch(path, json={"test_url": f"{api_server.base}/api/me"})
    assert patched.status_code == 200, patched.text

    api_server.script("/api/me", Step(200, body=b'{"id": "u1"}'))
    passed = connected.api.post(f"{path}/test")
    assert passed.status_code == 200, passed.text
    result = passed.json()
    assert (result["ok"], result["status"], result["error"]) == (True, 200, None)
    assert result["elapsed_ms"] >= 0
    assert connected.api.get(path).json()["last_test"] == result
    assert api_server.seen[-1].headers["authorization"].startswith("Bearer ")

    api_server.script("/api/me", Step(403, body=b"forbidden"))
    failed = connected.api.post(f"{path}/test").json()
    assert (failed["ok"], failed["status"]) == (False, 403)
    shown = connected.api.get(path).json()
    assert (shown["status"], shown["last_test"]["ok"]) == ("connected", False)  # still connected, says so


def test_a_connect_tests_the_connection_once_by_itself(
    api: ApiClient, provider: OidcProvider, api_server: ScriptedApi
) -> None:
    client = api.as_tenant(new_tenant("tested"))
    base = f"{api_server.base}/api/"
    passing = create_connection(client, provider, allowed_urls=[base], test_url=f"{base}me")
    failing = create_connection(client, provider, allowed_urls=[base], test_url=f"{base}denied")
    api_server.script("/api/me", Step(200))
    api_server.script("/api/denied", Step(401))
    for connection in (passing, failing):
        connect(client, connection["id"], RETURN_URL)

    good = client.get(f"/connections/{passing['id']}").json()
    assert (good["status"], good["last_test"]["ok"], good["last_test"]["status"]) == ("connected", True, 200)
    bad = client.get(f"/connections/{failing['id']}").json()
    assert (bad["status"], bad["last_test"]["ok"], bad["last_test"]["status"]) == ("connected", False, 401)
    assert [seen.path for seen in api_server.seen] == ["/api/me", "/api/denied", "/api/denied"]  # one retry
    assert active(provider, api_server.seen[0].headers["authorization"])


def test_each_call_logs_what_it_did_and_nothing_it_carried(
    connected: Connected, api_server: ScriptedApi, provider: OidcProvider
) -> None:
    api_server.script("/api/contacts", Step(201, {"Content-Type": "application/json"}, b'{"secret-answer": 1}'))
    answer = connected.call(
        method="POST",
        path="/contacts",
        query={"q": "query-value-7"},
        headers={"X-Custom": "header-value-7"},
        json={"email": "body-value-7"},
    )
    assert answer["status"] == 201
    token = api_server.seen[0].headers["authorization"].removeprefix("Bearer ")
    # The function's output comes through a pipe, so its line may land a moment after the answer.
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in connected.stack.function_logs(CALL_API) if connected.connection_id in line]
        records = [json.loads(line) for line in lines if line.startswith("{")]
        if any(r.get("message") == "api call" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    [logged] = [r for r in records if r.get("message") == "api call"]
    assert (logged["method"], logged["api_host"], logged["status"], logged["attempts"]) == ("POST", "127.0.0.1", 201, 1)
    assert logged["duration_ms"] >= 0
    for leaked in (token, "query-value-7", "header-value-7", "body-value-7", "secret-answer"):
        assert not any(leaked in line for line in lines), leaked
