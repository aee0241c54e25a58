"""Scopes through the local API gateway: every operation of the OpenAPI document with four tokens.

A read-only token, a manage token, one with both and one with none call every documented operation.
Each call gets exactly what the document promises for its scopes: the operation's own answer, or the
gateway's 403 ``{"message": "Forbidden"}``. A refused call changes nothing: its function never runs
and the tenant reads back the same as before.

Reads and refused calls use one tenant's objects, made once; an allowed change works on fresh objects
of a tenant of its own, so the shared objects only ever see calls that must not change them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from oauth_connections.entrypoints.http.access import BEARER_SCHEME, MANAGE_SCOPE, READ_SCOPE
from tests.support.provider import SERVICE_CLIENT_ID, SERVICE_CLIENT_SECRET, OidcProvider, standard_clients
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import callback_url, new_tenant

TOKEN_SCOPES: dict[str, str | None] = {
    "read": READ_SCOPE,
    "manage": MANAGE_SCOPE,
    "both": f"{READ_SCOPE} {MANAGE_SCOPE}",
    "none": None,
}
FORBIDDEN = {"message": "Forbidden"}
RETURN_URL = "http://127.0.0.1:8000/connections"  # an allowed frontend origin of the local stack
UNREACHABLE_FEED = "http://127.0.0.1:9/feed.yml"  # loopback is allowed on the local stack; nothing listens
UNREACHABLE_API = "http://127.0.0.1:9/api/"


# ------------------------------------------------------------------ the objects a call works on


class Tenant:
    """A tenant and the objects of its calls, made with a manage token; ``shared`` makes each kind once."""

    def __init__(self, stack: Stack, provider: OidcProvider, *, shared: bool) -> None:
        self.id = new_tenant("scopes")
        self.stack = stack
        self.provider = provider
        self.manager = ApiClient(stack).as_tenant(self.id, scope=MANAGE_SCOPE)
        self._shared = shared
        self._made: dict[str, str] = {}

    def client(self, kind: str) -> ApiClient:
        return ApiClient(self.stack).as_tenant(self.id, scope=TOKEN_SCOPES[kind])

    def _once(self, kind: str, make: Callable[[], str]) -> str:
        if not self._shared:
            return make()
        if kind not in self._made:
            self._made[kind] = make()
        return self._made[kind]

    def pending_connection(self) -> str:
        """An authorization-code connection, not connected yet."""
        return self._once("pending", lambda: self._create("/connections", authorization_code_body()))

    def connected_connection(self) -> str:
        """A client-credentials connection to the real provider, connected."""

        def make() -> str:
            connection_id = self._create("/connections", client_credentials_body(self.provider))
            connected = self.manager.post(f"/connections/{connection_id}/authorize", json={})
            assert connected.status_code == 200 and connected.json()["status"] == "connected", connected.text
            return connection_id

        return self._once("connected", make)

    def feed(self) -> str:
        return self._once("feed", lambda: self._create("/feeds", feed_body()))

    def _create(self, path: str, body: dict[str, Any]) -> str:
        response = self.manager.post(path, json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def state(self) -> dict[str, Any]:
        """Everything the tenant can read back, and every item of its partition."""
        reads = ["/connections?limit=100", "/feeds?limit=100"]
        reads += [f"/connections/{connection_id}" for kind, connection_id in self._made.items() if kind != "feed"]
        if "feed" in self._made:
            reads += [f"/feeds/{self._made['feed']}", f"/feeds/{self._made['feed']}/runs"]
        views = {}
        for path in reads:
            response = self.manager.get(path)
            views[path] = (response.status_code, response.headers.get("ETag"), response.json())
        items = self.stack.boto3_client("dynamodb").query(
            TableName=self.stack.physical_ids["ConnectionsTable"],
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"TENANT#{self.id}"}},
            ConsistentRead=True,
        )["Items"]
        return {"views": views, "items": sorted(items, key=lambda item: item["sk"]["S"])}


def unique_name(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def authorization_code_body() -> dict[str, Any]:
    return {
        "name": unique_name("crm"),
        "client_id": "crm-client",
        "client_secret": "crm-secret",
        "authorization_url": "https://login.crm.example.com/oauth/authorize",
        "token_url": "https://login.crm.example.com/oauth/token",
        "scopes": ["contacts.read"],
    }


def client_credentials_body(provider: OidcProvider) -> dict[str, Any]:
    return {
        "name": unique_name("service account"),
        "grant_type": "client_credentials",
        "client_id": SERVICE_CLIENT_ID,
        "client_secret": SERVICE_CLIENT_SECRET,
        "token_url": provider.token_endpoint,
        "scopes": ["api.read"],
        "allowed_urls": [UNREACHABLE_API],
        "test_url": f"{UNREACHABLE_API}me",
    }


def feed_body() -> dict[str, Any]:
    return {"name": unique_name("feed"), "url": UNREACHABLE_FEED}


# ------------------------------------------------------------------ every documented operation


@dataclass(frozen=True)
class Operation:
    """How to call one operation on a tenant's objects, and what its own answer must show."""

    call: Callable[[ApiClient, Tenant], requests.Response]
    check: Callable[[requests.Response, Tenant], None]


def _ids(response: requests.Response) -> list[str]:
    return [item["id"] for item in response.json()["items"]]


def _has(found: list[str], *expected: str) -> None:
    assert set(expected) <= set(found), (expected, found)


def _equal(found: Any, expected: Any) -> None:
    assert found == expected


def _starts(found: str, prefix: str) -> None:
    assert found.startswith(prefix), found


def _renamed(response: requests.Response, tenant: Tenant) -> None:
    assert response.json()["name"].startswith("renamed ")


def _deleted(path: str) -> Callable[[requests.Response, Tenant], None]:
    def check(response: requests.Response, tenant: Tenant) -> None:
        deleted_id = response.request.path_url.rsplit("/", 1)[-1]
        assert tenant.manager.get(f"{path}/{deleted_id}").status_code == 404

    return check


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/providers"): Operation(
        lambda client, tenant: client.get("/providers"),
        lambda response, tenant: _has([p["id"] for p in response.json()["items"]], "salesforce", "zendesk"),
    ),
    ("GET", "/connections"): Operation(
        lambda client, tenant: client.get("/connections", params={"limit": 100}),
        lambda response, tenant: _has(_ids(response), tenant.connected_connection(), tenant.pending_connection()),
    ),
    ("POST", "/connections"): Operation(
        lambda client, tenant: client.post("/connections", json=authorization_code_body()),
        lambda response, tenant: _equal(response.json()["status"], "pending"),
    ),
    ("GET", "/connections/{connection_id}"): Operation(
        lambda client, tenant: client.get(f"/connections/{tenant.connected_connection()}"),
        lambda response, tenant: _equal(response.json()["id"], tenant.connected_connection()),
    ),
    ("PATCH", "/connections/{connection_id}"): Operation(
        lambda client, tenant: client.patch(
            f"/connections/{tenant.connected_connection()}", json={"name": unique_name("renamed")}
        ),
        _renamed,
    ),
    ("DELETE", "/connections/{connection_id}"): Operation(
        lambda client, tenant: client.delete(f"/connections/{tenant.connected_connection()}"),
        _deleted("/connections"),
    ),
    ("POST", "/connections/{connection_id}/authorize"): Operation(
        lambda client, tenant: client.post(
            f"/connections/{tenant.pending_connection()}/authorize", json={"return_url": RETURN_URL}
        ),
        lambda response, tenant: _starts(response.json()["redirect_url"], f"{tenant.stack.api_url}/oauth2/authorize?"),
    ),
    ("POST", "/connections/{connection_id}/refresh"): Operation(
        lambda client, tenant: client.post(f"/connections/{tenant.connected_connection()}/refresh"),
        lambda response, tenant: _equal(response.json()["status"], "connected"),
    ),
    ("POST", "/connections/{connection_id}/test"): Operation(
        lambda client, tenant: client.post(f"/connections/{tenant.connected_connection()}/test"),
        lambda response, tenant: _equal(
            (response.json()["ok"], response.json()["error"]), (False, "provider_unavailable")
        ),
    ),
    ("GET", "/connections/{connection_id}/activity"): Operation(
        lambda client, tenant: client.get(f"/connections/{tenant.pending_connection()}/activity"),
        lambda response, tenant: _equal(response.json()["items"][-1]["type"], "connection.created"),
    ),
    ("GET", "/activity"): Operation(
        lambda client, tenant: client.get("/activity", params={"type": "connection.created", "limit": 100}),
        lambda response, tenant: _has(
            [item["subject_id"] for item in response.json()["items"]], tenant.pending_connection()
        ),
    ),
    ("GET", "/feeds"): Operation(
        lambda client, tenant: client.get("/feeds", params={"limit": 100}),
        lambda response, tenant: _has(_ids(response), tenant.feed()),
    ),
    ("POST", "/feeds"): Operation(
        lambda client, tenant: client.post("/feeds", json=feed_body()),
        lambda response, tenant: _equal(response.json()["url"], UNREACHABLE_FEED),
    ),
    ("GET", "/feeds/{feed_id}"): Operation(
        lambda client, tenant: client.get(f"/feeds/{tenant.feed()}"),
        lambda response, tenant: _equal(response.json()["id"], tenant.feed()),
    ),
    ("PATCH", "/feeds/{feed_id}"): Operation(
        lambda client, tenant: client.patch(f"/feeds/{tenant.feed()}", json={"name": unique_name("renamed")}),
        _renamed,
    ),
    ("DELETE", "/feeds/{feed_id}"): Operation(
        lambda client, tenant: client.delete(f"/feeds/{tenant.feed()}"),
        _deleted("/feeds"),
    ),
    ("POST", "/feeds/{feed_id}/run"): Operation(
        lambda client, tenant: client.post(f"/feeds/{tenant.feed()}/run"),
        lambda response, tenant: _equal(response.json(), {"status": "queued"}),
    ),
    ("GET", "/feeds/{feed_id}/runs"): Operation(
        lambda client, tenant: client.get(f"/feeds/{tenant.feed()}/runs"),
        lambda response, tenant: _equal(response.json(), {"items": []}),
    ),
    ("GET", "/feeds/{feed_id}/activity"): Operation(
        lambda client, tenant: client.get(f"/feeds/{tenant.feed()}/activity"),
        lambda response, tenant: _equal(response.json()["items"][-1]["type"], "feed.created"),
    ),
    ("GET", "/openapi.json"): Operation(
        lambda client, tenant: client.get("/openapi.json"),
        lambda response, tenant: _equal(response.json()["info"]["title"], "OAuth2 connection service"),
    ),
}


# ------------------------------------------------------------------ the matrix


@pytest.fixture(scope="module")
def scopes_provider(stack: Stack) -> Iterator[OidcProvider]:
    """The real authorization server: client-credentials connections get and refresh tokens there."""
    with OidcProvider(standard_clients([callback_url(stack)])) as running:
        yield running


@pytest.fixture(scope="module")
def shared(stack: Stack, scopes_provider: OidcProvider) -> Tenant:
    tenant = Tenant(stack, scopes_provider, shared=True)
    tenant.pending_connection(), tenant.connected_connection(), tenant.feed()
    return tenant


@pytest.fixture(scope="module")
def document(shared: Tenant) -> dict[str, Any]:
    response = shared.client("both").get("/openapi.json")
    assert response.status_code == 200, response.text
    served: dict[str, Any] = response.json()
    return served


def _accepted_scopes(operation: dict[str, Any]) -> set[str]:
    """API Gateway lets a token through with any of the scopes of any alternative."""
    return {scope for alternative in operation["security"] for scope in alternative[BEARER_SCHEME]}


def _success_status(operation: dict[str, Any]) -> int:
    return min(int(status) for status in operation["responses"] if status.startswith("2"))


def _invocations(stack: Stack, function: str) -> int:
    return sum(line.startswith("START RequestId:") for line in stack.function_logs(function))


def _function_of(stack: Stack, method: str, path: str) -> str:
    return next(route.function for route in stack.routes if route.route_key == f"{method} {path}")


def test_the_matrix_covers_every_documented_operation(document: dict[str, Any], stack: Stack) -> None:
    documented = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}
    assert documented == set(OPERATIONS)
    authenticated = {(route.method, route.path) for route in stack.routes if route.authorizer is not None}
    assert authenticated == documented  # no route behind the authorizer is left out of the document


@pytest.mark.parametrize("kind", list(TOKEN_SCOPES))
@pytest.mark.parametrize(("method", "path"), list(OPERATIONS), ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_each_token_gets_what_the_document_promises(
    method: str,
    path: str,
    kind: str,
    document: dict[str, Any],
    shared: Tenant,
    stack: Stack,
    scopes_provider: OidcProvider,
) -> None:
    operation = document["paths"][path][method.lower()]
    presented = set((TOKEN_SCOPES[kind] or "").split())
    allowed = bool(_accepted_scopes(operation) & presented)
    expected_allowed = kind != "none" and (method == "GET" or kind != "read")
    assert allowed is expected_allowed  # reading takes either scope, changing only manage

    changes = method != "GET"
    tenant = Tenant(stack, scopes_provider, shared=False) if allowed and changes else shared
    function = _function_of(stack, method, path)
    before, invoked = tenant.state(), _invocations(stack, function)
    response = OPERATIONS[(method, path)].call(tenant.client(kind), tenant)

    if allowed:
        assert response.status_code == _success_status(operation), response.text
        if response.status_code != 204:
            assert response.headers["Content-Type"].startswith("application/json")
        OPERATIONS[(method, path)].check(response, tenant)
        return
    assert response.status_code == 403, response.text
    assert response.json() == FORBIDDEN
    assert _invocations(stack, function) == invoked  # the gateway refused it: the function never ran
    assert tenant.state() == before


# ------------------------------------------------------------------ scopes turned off


@pytest.fixture(scope="module")
def unscoped_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The template deployed with RequireScopes=false, for platforms whose tokens carry no scopes."""
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=tmp_path_factory.mktemp("devstack-unscoped"),
        parameter_overrides={"RequireScopes": "false"},
        schedules=False,
        with_provider=False,
    ) as running:
        yield running


def test_without_required_scopes_every_tenant_user_may_manage(unscoped_stack: Stack) -> None:
    assert unscoped_stack.route_scopes == []
    client = ApiClient(unscoped_stack).as_tenant(new_tenant("unscoped"), scope=None)
    created = client.post("/connections", json=authorization_code_body())
    assert created.status_code == 201, created.text
    deleted = client.delete(f"/connections/{created.json()['id']}")
    assert deleted.status_code == 204, deleted.text
    document = client.get("/openapi.json").json()
    operations = [operation for methods in document["paths"].values() for operation in methods.values()]
    assert len(operations) == len(OPERATIONS)
    assert all(operation["security"] == [{BEARER_SCHEME: []}] for operation in operations)
