"""The connections API over HTTP: the local API gateway with its JWT authorizer in front of the functions."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from devstack import Stack
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import callback_url, new_tenant

# Every connection this module creates carries this secret; no response body and no log line may show it.
CLIENT_SECRET = f"client-secret-{uuid.uuid4().hex}"
RESPONSE_BODIES: list[str] = []


@pytest.fixture(autouse=True)
def _record_response_bodies(api: ApiClient) -> None:
    def record(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        RESPONSE_BODIES.append(response.text)

    api.session.hooks["response"].append(record)


def connection_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"crm {uuid.uuid4().hex[:8]}",
        "client_id": "crm-client",
        "client_secret": CLIENT_SECRET,
        "authorization_url": "https://login.crm.example.com/oauth/authorize",
        "token_url": "https://login.crm.example.com/oauth/token",
        "scopes": ["contacts.read"],
    }
    return body | overrides


def create(client: ApiClient, **overrides: Any) -> dict[str, Any]:
    response = client.post("/connections", json=connection_body(**overrides))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def assert_error(response: requests.Response, *statuses: int, code: str | None = None) -> dict[str, Any]:
    """A refused request: one of the expected 4xx statuses, in the service's error shape."""
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def etag(response: requests.Response) -> str:
    value: str = response.headers["ETag"]
    return value


# ------------------------------------------------------------------ CRUD


def test_crud_round_trip(api: ApiClient, stack: Stack) -> None:
    client = api.as_tenant(new_tenant())
    created = client.post("/connections", json=connection_body(name="CRM production", description="first"))
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    view = created.json()
    connection_id = view["id"]
    assert connection_id.startswith("con_")
    assert etag(created) == f'"{view["version"]}"'
    assert view["status"] == "pending"
    assert view["has_client_secret"] is True
    assert "client_secret" not in view
    assert view["redirect_uri"] == callback_url(stack)
    assert view["token_url"] == "https://login.crm.example.com/oauth/token"
    assert view["token_auth_method"] == "client_secret_basic" and view["use_pkce"] is True

    read = client.get(f"/connections/{connection_id}")
    assert read.status_code == 200
    assert read.json() == view
    assert etag(read) == etag(created)
    listed = client.get("/connections")
    assert listed.status_code == 200
    assert listed.json() == {"items": [view], "next_cursor": None}

    patched = client.patch(
        f"/connections/{connection_id}",
        json={"description": "second", "scopes": ["contacts.read", "contacts.write"]},
        headers={"If-Match": etag(read)},
    )
    assert patched.status_code == 200, patched.text
    updated = patched.json()
    assert updated["description"] == "second"
    assert updated["scopes"] == ["contacts.read", "contacts.write"]
    assert updated["version"] > view["version"]
    assert etag(patched) == f'"{updated["version"]}"' != etag(read)
    assert updated["updated_at"] >= view["updated_at"] and updated["created_at"] == view["created_at"]

    # A writer that read before that change is refused, and changes nothing.
    stale = client.patch(
        f"/connections/{connection_id}", json={"description": "third"}, headers={"If-Match": etag(read)}
    )
    assert_error(stale, 412, code="stale_update")
    assert client.get(f"/connections/{connection_id}").json() == updated

    # A rename moves the unique name: the old one is free again, the new one taken.
    renamed = client.patch(f"/connections/{connection_id}", json={"name": "CRM live"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "CRM live"
    assert create(client, name="CRM production")["name"] == "CRM production"
    assert_error(client.post("/connections", json=connection_body(name="crm LIVE")), 409, code="name_taken")

    deleted = client.delete(f"/connections/{connection_id}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(client.get(f"/connections/{connection_id}"), 404, code="not_found")
    assert_error(client.delete(f"/connections/{connection_id}"), 404, code="not_found")
    assert_error(client.patch(f"/connections/{connection_id}", json={"description": "x"}), 404, code="not_found")
    assert [item["name"] for item in client.get("/connections").json()["items"]] == ["CRM production"]
    assert create(client, name="CRM live")["name"] == "CRM live"  # the deleted connection's name is free


# ------------------------------------------------------------------ authentication

TokenFactory = Callable[[Stack, str], str | None]
BAD_TOKENS: list[Any] = [
    pytest.param(lambda stack, tenant: None, id="no-token"),
    pytest.param(lambda stack, tenant: stack.mint_token(tenant, audience="another-api"), id="other-audience"),
    pytest.param(lambda stack, tenant: stack.mint_token(tenant, expires_in=-60), id="expired"),
    pytest.param(
        lambda stack, tenant: stack.mint_token(tenant, issuer="https://issuer.example.com"), id="other-issuer"
    ),
    pytest.param(lambda stack, tenant: "not.a.jwt", id="garbage"),
]


@pytest.mark.parametrize("make_token", BAD_TOKENS)
def test_requests_without_a_valid_token_are_401(api: ApiClient, stack: Stack, make_token: TokenFactory) -> None:
    tenant = new_tenant()
    owner = api.as_tenant(tenant)
    existing = create(owner)
    client = api.with_token(make_token(stack, tenant))
    calls = [
        client.get("/connections"),
        client.get(f"/connections/{existing['id']}"),
        client.post("/connections", json=connection_body()),
        client.patch(f"/connections/{existing['id']}", json={"description": "changed"}),
        client.delete(f"/connections/{existing['id']}"),
        client.post(f"/connections/{existing['id']}/authorize", json={"return_url": "http://127.0.0.1:5173/"}),
        client.get("/openapi.json"),
    ]
    for response in calls:
        assert response.status_code == 401, (response.request.method, response.request.url, response.text)
        assert response.json() == {"message": "Unauthorized"}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # None of them reached a function: nothing was created, changed or deleted.
    assert owner.get("/connections").json()["items"] == [existing]


def test_token_without_a_tenant_claim_is_401(api: ApiClient, stack: Stack) -> None:
    client = api.with_token(stack.mint_token("ignored", claims={stack.tenant_claim: None}))
    assert_error(client.get("/connections"), 401, code="invalid_tenant_claim")
    assert_error(client.post("/connections", json=connection_body()), 401, code="invalid_tenant_claim")


# ------------------------------------------------------------------ tenants


def test_tenants_are_isolated_both_ways(api: ApiClient) -> None:
    alpha, beta = api.as_tenant(new_tenant("alpha")), api.as_tenant(new_tenant("beta"))
    # The same name in two tenants is no conflict: names are unique per tenant.
    mine = create(alpha, name="Shared name")
    theirs = create(beta, name="Shared name")
    for client, foreign in ((beta, mine), (alpha, theirs)):
        path = f"/connections/{foreign['id']}"
        assert_error(client.get(path), 404, code="not_found")
        assert_error(client.patch(path, json={"description": "hijacked"}), 404, code="not_found")
        assert_error(client.delete(path), 404, code="not_found")
        authorize = client.post(f"{path}/authorize", json={"return_url": "http://127.0.0.1:5173/done"})
        assert_error(authorize, 404, code="not_found")
        assert_error(client.post(f"{path}/refresh"), 404, code="not_found")
    assert alpha.get("/connections").json() == {"items": [mine], "next_cursor": None}
    assert beta.get("/connections").json() == {"items": [theirs], "next_cursor": None}
    assert alpha.get(f"/connections/{mine['id']}").json() == mine  # untouched by the other tenant


def test_pagination_with_limit_and_cursor(api: ApiClient) -> None:
    client = api.as_tenant(new_tenant())
    created = [create(client, name=f"page {index}")["id"] for index in range(5)]
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/connections", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        sizes.append(len(body["items"]))
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(sizes) < 5, "pagination does not end"
    assert sizes == [2, 2, 1]
    assert seen == created  # creation order, each exactly once
    # A cursor is only a position: another tenant's cursor shows that tenant its own items only.
    first_page = client.get("/connections", params={"limit": 2}).json()
    other = api.as_tenant(new_tenant())
    other_id = create(other)["id"]
    foreign_cursor = other.get("/connections", params={"cursor": first_page["next_cursor"]})
    assert foreign_cursor.status_code == 200
    assert {item["id"] for item in foreign_cursor.json()["items"]} <= {other_id}
    assert_error(client.get("/connections", params={"cursor": "!!not-a-cursor!!"}), 400, code="invalid_cursor")
    for limit in ("0", "101", "abc"):
        assert_error(client.get("/connections", params={"limit": limit}), 400, 422)


def test_duplicate_name_is_409(api: ApiClient) -> None:
    client = api.as_tenant(new_tenant())
    first = create(client, name="Billing")
    assert_error(client.post("/connections", json=connection_body(name="Billing")), 409, code="name_taken")
    assert_error(client.post("/connections", json=connection_body(name="  bILLING ")), 409, code="name_taken")
    second = create(client, name="Billing EU")
    assert_error(client.patch(f"/connections/{second['id']}", json={"name": "billing"}), 409, code="name_taken")
    assert [item["id"] for item in client.get("/connections").json()["items"]] == [first["id"], second["id"]]


# ------------------------------------------------------------------ bad input

BAD_REQUESTS: list[Any] = [
    pytest.param(
        "POST",
        "/connections",
        {"data": "{not json", "headers": {"Content-Type": "application/json"}},
        (400,),
        id="malformed-json",
    ),
    pytest.param("POST", "/connections", {"json": {}}, (422,), id="empty-object"),
    pytest.param("POST", "/connections", {"json": [1, 2]}, (400, 422), id="json-array"),
    pytest.param("POST", "/connections", {"json": connection_body(status="connected")}, (422,), id="unknown-field"),
    pytest.param("POST", "/connections", {"json": connection_body(name=" ")}, (422,), id="blank-name"),
    pytest.param(
        "POST", "/connections", {"json": connection_body(issuer="https://169.254.169.254/")}, (422,), id="ssrf-metadata"
    ),
    pytest.param(
        "POST", "/connections", {"json": connection_body(token_url="http://10.0.0.1/token")}, (422,), id="ssrf-private"
    ),
    pytest.param(
        "POST",
        "/connections",
        {"json": connection_body(revocation_url="https://[::ffff:169.254.169.254]/revoke")},
        (422,),
        id="ssrf-mapped-v6",
    ),
    pytest.param(
        "POST",
        "/connections",
        {"json": connection_body(allowed_urls=["https://192.168.1.1/api"])},
        (422,),
        id="ssrf-allowed-url",
    ),
    pytest.param(
        "POST", "/connections", {"json": connection_body(token_url="file:///etc/passwd")}, (422,), id="file-url"
    ),
    pytest.param(
        "POST", "/connections", {"json": connection_body(token_auth_method="none")}, (422,), id="secret-with-none"
    ),
    pytest.param(
        "POST",
        "/connections",
        {"json": connection_body(extra_authorize_params={"redirect_uri": "https://evil.example.com/cb"})},
        (422,),
        id="reserved-param",
    ),
    pytest.param("GET", "/connections/not-a-connection-id", {}, (422,), id="malformed-id"),
    pytest.param("GET", "/connections/con_" + "0" * 26, {}, (404,), id="unknown-id"),
    pytest.param("PATCH", "/connections/{id}", {"json": {}}, (422,), id="empty-patch"),
    pytest.param("PATCH", "/connections/{id}", {"json": {"token_url": None}}, (422,), id="null-required"),
    pytest.param(
        "PATCH", "/connections/{id}", {"json": {"token_url": "https://10.0.0.1/token"}}, (422,), id="ssrf-patch"
    ),
    pytest.param(
        "PATCH",
        "/connections/{id}",
        {"json": {"description": "x"}, "headers": {"If-Match": "not-an-etag"}},
        (400,),
        id="bad-if-match",
    ),
    pytest.param(
        "POST",
        "/connections/{id}/authorize",
        {"json": {"return_url": "https://evil.example.com/"}},
        (400,),
        id="foreign-return-url",
    ),
    pytest.param("POST", "/connections/{id}/authorize", {"json": {}}, (400, 422), id="no-return-url"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "statuses"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_in_the_error_shape(
    api: ApiClient, method: str, path: str, kwargs: dict[str, Any], statuses: tuple[int, ...]
) -> None:
    client = api.as_tenant(new_tenant())
    existing = create(client)
    response = client.request(method, path.format(id=existing["id"]), **kwargs)
    assert_error(response, *statuses)
    assert CLIENT_SECRET not in response.text
    assert client.get(f"/connections/{existing['id']}").json() == existing  # nothing changed


def test_unsafe_urls_are_named_in_the_details(api: ApiClient) -> None:
    client = api.as_tenant(new_tenant())
    for field, url in (("issuer", "https://169.254.169.254/"), ("token_url", "http://10.0.0.1/")):
        error = assert_error(client.post("/connections", json=connection_body(**{field: url})), 422)
        assert [detail["field"] for detail in error["details"]] == [field], error
    assert client.get("/connections").json()["items"] == []


def test_oversized_body_is_413(api: ApiClient) -> None:
    client = api.as_tenant(new_tenant())
    existing = create(client)
    huge = "x" * (100 * 1024)
    assert_error(client.post("/connections", json=connection_body(description=huge)), 413, code="payload_too_large")
    patch = client.patch(f"/connections/{existing['id']}", json={"description": huge})
    assert_error(patch, 413, code="payload_too_large")
    assert client.get("/connections").json()["items"] == [existing]


# ------------------------------------------------------------------ the document and the secret


def test_openapi_document(api: ApiClient) -> None:
    response = api.as_tenant(new_tenant()).get("/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "OAuth2 connection service"
    paths = document["paths"]
    assert set(paths["/connections"]) == {"get", "post"}
    assert set(paths["/connections/{connection_id}"]) == {"get", "patch", "delete"}
    assert "post" in paths["/connections/{connection_id}/authorize"]
    assert "post" in paths["/connections/{connection_id}/refresh"]
    # The browser-facing routes are not part of the documented API.
    assert "/oauth2/callback" not in paths and "/oauth2/authorize" not in paths


def test_client_secret_never_in_responses_or_logs(api: ApiClient, stack: Stack) -> None:
    """Runs last in this module: it also checks every response body recorded by the tests before it."""
    client = api.as_tenant(new_tenant())
    rotated = f"rotated-secret-{uuid.uuid4().hex}"
    created = create(client, name="leak check")
    path = f"/connections/{created['id']}"
    responses = [
        client.get(path),
        client.get("/connections"),
        client.patch(path, json={"client_secret": rotated}),
        client.get(path),
        # Refused requests must not echo the secret either.
        client.post("/connections", json=connection_body(name="leak check")),
        client.post("/connections", json=connection_body(name="x" * 200)),
        client.post("/connections", json=connection_body(client_secret=rotated, token_auth_method="none")),
        client.patch(path, json={"client_secret": rotated, "bogus": rotated}),
        client.patch(path, json={"client_secret": 12345}),
        client.delete(path),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 409, 422, 422, 422, 422, 204]
    assert responses[3].json()["has_client_secret"] is True
    for response in responses:
        assert rotated not in response.text and rotated not in repr(response.headers)
    assert RESPONSE_BODIES and all(CLIENT_SECRET not in body for body in RESPONSE_BODIES)
    logs = "\n".join(stack.function_logs())
    assert "connection created" in logs and "request refused" in logs  # the functions' logs are captured
    assert CLIENT_SECRET not in logs
    assert rotated not in logs


README_ERROR_BODY = (
    '{"name": "x", "client_id": "a", "client_secret": "b", "token_url": "https://169.254.169.254/token"}'
)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "application/x-www-form-urlencoded"}, {"Content-Type": "text/plain"}],
    ids=["no-content-type", "form", "text"],
)
def test_a_json_body_without_its_media_type_is_415_through_the_gateway(api: ApiClient, headers: dict[str, str]) -> None:
    client = api.as_tenant(new_tenant())
    for method, path in [("POST", "/connections"), ("POST", "/feeds")]:
        response = client.request(method, path, data=README_ERROR_BODY.encode(), headers=headers)
        assert_error(response, 415, code="unsupported_media_type")
    assert client.get("/connections").json()["items"] == []


def test_the_readme_error_example_names_the_unsafe_field(api: ApiClient) -> None:
    response = api.as_tenant(new_tenant()).post(
        "/connections", data=README_ERROR_BODY.encode(), headers={"Content-Type": "application/json"}
    )
    error = assert_error(response, 422, code="validation_error")
    assert [(detail["field"], detail["issue"]) for detail in error["details"]] == [("token_url", "unsafe_url")]


def test_the_gateway_answers_unknown_routes_and_missing_tokens_itself(api: ApiClient) -> None:
    """These two answers come from API Gateway, not from a function: `{"message": ...}`, not the error shape."""
    unknown = api.as_tenant(new_tenant()).get("/nothing-here")
    assert (unknown.status_code, unknown.content) == (404, b'{"message":"Not Found"}')
    anonymous = api.get("/connections")
    assert (anonymous.status_code, anonymous.content) == (401, b'{"message":"Unauthorized"}')
    assert anonymous.headers["www-authenticate"] == "Bearer"
