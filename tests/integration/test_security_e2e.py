"""The whole product end to end with DEBUG logs, adversarially: nothing secret leaks anywhere, and no
tenant reaches another tenant's data through any route.

One stack at LogLevel=DEBUG and the real provider: create a connection, authorize it in the real flow,
retrieve a token, refresh, fetch a protected feed, delete. Then no client secret, access token, refresh
token, authorization code or PKCE verifier may appear in any function log line, any response body or
header we produced (the redirects included), or any published event.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from oauth_connections.oauth.token_endpoint import TokenSet
from oauth_connections.security.crypto import EncryptionContext, Envelope
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider, standard_clients
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import callback_url, get_token, invoke, stored_item
from tests.support.user_agent import walk_authorization

RETURN_URL = "http://127.0.0.1:8000/connected"


@pytest.fixture(scope="module")
def debug_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=tmp_path_factory.mktemp("devstack-debug"),
        parameter_overrides={"LogLevel": "DEBUG"},
        schedules=False,
        echo_logs=False,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def debug_provider(debug_stack: Stack) -> Iterator[OidcProvider]:
    with OidcProvider(standard_clients(callback_url(debug_stack))) as running:
        yield running


class Recorder:
    """Every response the service gave: body, headers (redirect locations and cookies included) and URL."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.seen: list[str] = []

    def __call__(self, response: requests.Response) -> requests.Response:
        if response.url.startswith(self.api_url):
            self.seen += [response.text, json.dumps(dict(response.headers))]
        return response


def decrypt(stack: Stack, ciphertext: bytes, tenant: str, connection_id: str, purpose: str) -> bytes:
    return Envelope(str(stack.attributes["EncryptionKey"]["Arn"])).decrypt(
        ciphertext,
        EncryptionContext(tenant, connection_id, purpose),  # type: ignore[arg-type]
    )


def stored_tokens(stack: Stack, tenant: str, connection_id: str) -> TokenSet:
    item = stored_item(stack, tenant, connection_id)
    return TokenSet.from_json(decrypt(stack, item["tokens_ciphertext"]["B"], tenant, connection_id, "tokens"))


def flow_verifier(stack: Stack, tenant: str, connection_id: str) -> str:
    table = str(stack.physical_ids["ConnectionsTable"])
    items = stack.boto3_client("dynamodb").scan(TableName=table)["Items"]
    (item,) = [i for i in items if i["pk"]["S"].startswith("STATE#") and i["connection_id"]["S"] == connection_id]
    return decrypt(stack, item["code_verifier_ciphertext"]["B"], tenant, connection_id, "flow").decode()


def wait_for_run(api: ApiClient, feed_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = api.get(f"/feeds/{feed_id}/runs").json()["items"]
        if runs and runs[0]["status"] != "running":
            return dict(runs[0])
        time.sleep(0.5)
    pytest.fail("the feed run did not finish")


def test_no_secret_leaks_anywhere(
    debug_stack: Stack, debug_provider: OidcProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", debug_stack.aws_url)
    tenant = f"leak-{uuid.uuid4().hex[:8]}"
    record = Recorder(debug_stack.api_url)
    api = ApiClient(debug_stack).as_tenant(tenant)
    api.session.hooks["response"].append(lambda response, *args, **kwargs: record(response))

    created = api.post(
        "/connections",
        json={
            "name": "leak check",
            "client_id": BASIC_CLIENT_ID,
            "client_secret": BASIC_CLIENT_SECRET,
            "issuer": debug_provider.issuer,
            "scopes": ["api.read", "api.write"],
            "allowed_urls": [debug_provider.issuer + "/demo/"],
        },
    )
    assert created.status_code == 201, created.text
    connection_id = created.json()["id"]

    # The real flow: our redirect, the provider's pages, our callback, in one browser-like session.
    redirect_url = api.post(f"/connections/{connection_id}/authorize", json={"return_url": RETURN_URL}).json()[
        "redirect_url"
    ]
    browser = requests.Session()
    browser.hooks["response"].append(lambda response, *args, **kwargs: record(response))
    result = walk_authorization(redirect_url, session=browser)
    verifier = flow_verifier(debug_stack, tenant, connection_id)
    assert len(verifier) >= 43
    code = result.code
    assert code
    back = browser.get(result.callback_url, allow_redirects=False)
    assert back.status_code == 302
    assert "status=connected" in back.headers["Location"]

    first = stored_tokens(debug_stack, tenant, connection_id)
    token = get_token(debug_stack, tenant, connection_id)
    assert token["access_token"] == first.access_token
    assert api.post(f"/connections/{connection_id}/refresh").status_code == 200
    second = stored_tokens(debug_stack, tenant, connection_id)
    assert second.refresh_token != first.refresh_token

    feed = api.post(
        "/feeds",
        json={
            "name": "demo catalog",
            "url": debug_provider.issuer + "/demo/catalog.xml",
            "connection_id": connection_id,
            "schedule": 60,
            "format": "yml",
        },
    )
    assert feed.status_code == 201, feed.text
    assert api.post(f"/feeds/{feed.json()['id']}/run").status_code == 202
    run = wait_for_run(api, feed.json()["id"])
    assert run["status"] == "succeeded", run
    assert run["items"] == 1000

    test_url = {"test_url": debug_provider.issuer + "/demo/catalog.xml"}
    assert api.patch(f"/connections/{connection_id}", json=test_url).status_code == 200
    assert api.post(f"/connections/{connection_id}/test").status_code == 200

    assert api.delete(f"/connections/{connection_id}").status_code == 204
    # The activity logs are read back through the API, so every entry joins the responses checked below.
    activity = api.get(f"/connections/{connection_id}/activity", params={"limit": 100})
    assert activity.status_code == 200, activity.text
    kinds = [entry["type"] for entry in activity.json()["items"]]
    assert kinds[0] == "connection.deleted" and kinds[-1] == "connection.created"
    assert {"connection.refreshed", "connection.tested", "connection.updated"} <= set(kinds)
    feed_activity = api.get(f"/feeds/{feed.json()['id']}/activity", params={"limit": 100})
    assert [entry["type"] for entry in feed_activity.json()["items"]] == ["feed.run", "feed.created"]
    assert api.get("/activity", params={"limit": 100}).status_code == 200
    assert not debug_provider.introspect(second.refresh_token or "", BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"]

    secrets = {
        "client secret": BASIC_CLIENT_SECRET,
        "first access token": first.access_token,
        "second access token": second.access_token,
        "first refresh token": first.refresh_token or "",
        "second refresh token": second.refresh_token or "",
        "authorization code": code,
        "PKCE verifier": verifier,
    }
    logs = "\n".join(debug_stack.function_logs())
    events = json.dumps(debug_stack.published_events())
    assert re.search(r'"level":\s*"(INFO|DEBUG)"', logs)
    assert "connection.connected" in events and "feed.fetched" in events
    # Every step answered and was recorded: 14 API responses at least (one poll of the runs if the
    # fetch is done by then), two entries each.
    assert len(record.seen) >= 28
    for name, value in secrets.items():
        assert value, name
        assert value not in logs, f"{name} in a log line"
        assert value not in events, f"{name} in an event"
        for text in record.seen:
            assert value not in text, f"{name} in a response of the service"
    assert code not in back.headers["Location"]


# ------------------------------------------------------------------ isolation on every route


def routes_with_ids() -> list[tuple[str, str]]:
    from tests.unit.test_template import resources

    found = []
    for function in resources("AWS::Serverless::Function").values():
        for event in function["Properties"].get("Events", {}).values():
            path = event.get("Properties", {}).get("Path", "")
            if event["Type"] == "HttpApi" and "{" in path:
                found.append((event["Properties"]["Method"], path))
    return sorted(found)


BODIES = {
    ("PATCH", "/connections/{connection_id}"): {"description": "taken over"},
    ("POST", "/connections/{connection_id}/authorize"): {"return_url": RETURN_URL},
    ("PATCH", "/feeds/{feed_id}"): {"name": "taken over"},
}


def test_every_route_with_an_id_is_tenant_scoped(debug_stack: Stack, debug_provider: OidcProvider) -> None:
    owner = ApiClient(debug_stack).as_tenant(f"owner-{uuid.uuid4().hex[:8]}")
    intruder = ApiClient(debug_stack).as_tenant(f"intruder-{uuid.uuid4().hex[:8]}")
    connection = owner.post(
        "/connections",
        json={
            "name": "mine",
            "client_id": "c",
            "client_secret": "s",
            "issuer": debug_provider.issuer,
            "allowed_urls": [debug_provider.issuer + "/demo/"],
        },
    ).json()
    feed = owner.post(
        "/feeds",
        json={"name": "mine", "url": debug_provider.issuer + "/demo/catalog.xml", "connection_id": connection["id"]},
    ).json()
    ids = {"{connection_id}": connection["id"], "{feed_id}": feed["id"]}
    routes = routes_with_ids()
    assert len(routes) == 13  # seven connection routes, six feed routes
    for method, path in routes:
        url = path
        for placeholder, value in ids.items():
            url = url.replace(placeholder, value)
        response = intruder.request(method, url, json=BODIES.get((method, path)))
        assert response.status_code == 404, (method, path, response.status_code, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert connection["id"] not in intruder.get("/connections").text
    assert feed["id"] not in intruder.get("/feeds").text
    assert get_token(debug_stack, intruder_tenant(intruder), connection["id"])["error"]["code"] == "not_found"
    call = {"tenant_id": intruder_tenant(intruder), "connection_id": connection["id"], "method": "GET", "path": "/x"}
    assert invoke(debug_stack.lambda_client(), call, function="CallApiFunction").payload["error"]["code"] == "not_found"
    # Everything of the owner is untouched.
    assert owner.get(f"/connections/{connection['id']}").json()["description"] == ""
    assert owner.get(f"/feeds/{feed['id']}").json()["name"] == "mine"


def intruder_tenant(client: ApiClient) -> str:
    import jwt

    claims: dict[str, Any] = jwt.decode(client.token or "", options={"verify_signature": False})
    return str(claims["tenant_id"])
