"""The connections API, in-process against the embedded AWS: CRUD, pagination, isolation, concurrency."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import boto3
import pytest

from tests.conftest import InProcessApi, Resources, sample_event


def connection_body(**overrides: Any) -> dict[str, Any]:
    import json

    body = json.loads(sample_event("create_connection")["body"])
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def create(api: InProcessApi, **overrides: Any) -> dict[str, Any]:
    response = api.call("create_connection", body=connection_body(**overrides))
    assert response.status == 201, response.text
    return response.json()


def test_crud_round_trip(api: InProcessApi) -> None:
    created = create(api, name="CRM round trip")
    assert created["id"].startswith("con_")
    assert created["status"] == "pending"
    assert created["has_client_secret"] is True
    assert "client_secret" not in created
    assert created["redirect_uri"] == "https://api.example.com/oauth2/callback"
    assert created["scopes"] == ["contacts.read", "contacts.write", "offline_access"]
    assert created["granted_scopes"] is None and created["expires_at"] is None

    fetched = api.call("get_connection", connection_id=created["id"])
    assert fetched.status == 200
    assert fetched.json() == created
    assert fetched.headers["ETag"] == f'"{created["version"]}"'

    updated = api.call(
        "update_connection",
        connection_id=created["id"],
        body={"description": "changed", "scopes": ["a"], "client_secret": "rotated-secret"},
        headers={"if-match": fetched.headers["ETag"]},
    )
    assert updated.status == 200, updated.text
    body = updated.json()
    assert body["description"] == "changed" and body["scopes"] == ["a"]
    assert body["version"] == created["version"] + 1
    assert body["name"] == created["name"] and body["client_id"] == created["client_id"]

    assert api.call("delete_connection", connection_id=created["id"]).status == 204
    assert api.call("get_connection", connection_id=created["id"]).status == 404
    assert api.call("delete_connection", connection_id=created["id"]).status == 404


def test_public_base_url_sets_redirect_uri(api: InProcessApi, monkeypatch: pytest.MonkeyPatch) -> None:
    from oauth_connections.core.config import get_settings

    monkeypatch.setenv("PUBLIC_BASE_URL", "https://connect.example.com/")
    get_settings.cache_clear()
    assert create(api, name="custom domain")["redirect_uri"] == "https://connect.example.com/oauth2/callback"


def test_name_is_unique_per_tenant_case_insensitively(api: InProcessApi) -> None:
    create(api, name="Unique CRM")
    duplicate = api.call("create_connection", body=connection_body(name="unique crm"))
    assert duplicate.status == 409
    assert duplicate.json()["error"]["code"] == "name_taken"
    create(api.as_tenant("globex"), name="Unique CRM")  # another tenant may use the name


def test_rename_frees_the_old_name_and_claims_the_new(api: InProcessApi) -> None:
    first = create(api, name="Rename A")
    create(api, name="Rename B")
    clash = api.call("update_connection", connection_id=first["id"], body={"name": "rename b"})
    assert clash.status == 409 and clash.json()["error"]["code"] == "name_taken"
    assert api.call("update_connection", connection_id=first["id"], body={"name": "Rename C"}).status == 200
    create(api, name="Rename A")  # released


def test_pagination_walks_every_item_once(service_env: Resources) -> None:
    api = InProcessApi(tenant="paginated")
    ids = [create(api, name=f"page {i}")["id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        page = api.call("list_connections", query=query)
        assert page.status == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 3
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids  # creation order, no duplicates, nothing missed
    assert pages in (3, 4)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_full_last_page_has_no_cursor(service_env: Resources, count: int) -> None:
    """A cursor only when more items exist: a page that happens to be exactly full is the last one."""
    api = InProcessApi(tenant=f"exact-{count}-{uuid.uuid4().hex[:8]}")
    ids = [create(api, name=f"exact {i}")["id"] for i in range(count)]
    page = api.call("list_connections", query={"limit": str(count)}).json()
    assert [item["id"] for item in page["items"]] == ids
    assert page["next_cursor"] is None
    if count > 1:
        first = api.call("list_connections", query={"limit": str(count - 1)}).json()
        assert [item["id"] for item in first["items"]] == ids[:-1] and first["next_cursor"] is not None
        rest = api.call("list_connections", query={"limit": str(count - 1), "cursor": first["next_cursor"]}).json()
        assert [item["id"] for item in rest["items"]] == ids[-1:] and rest["next_cursor"] is None


@pytest.mark.parametrize("cursor", ["not-a-cursor!", "Q09OTkVDVElPTiNmb28", "x" * 600])
def test_bad_cursor_is_a_client_error(api: InProcessApi, cursor: str) -> None:
    response = api.call("list_connections", query={"cursor": cursor})
    assert response.status in (400, 422)
    assert "error" in response.json()


def test_tenant_isolation_both_ways(service_env: Resources) -> None:
    acme, globex = InProcessApi("acme-iso"), InProcessApi("globex-iso")
    mine = create(acme, name="isolated")
    theirs = create(globex, name="isolated")
    for owner, other, item in ((acme, globex, mine), (globex, acme, theirs)):
        assert other.call("get_connection", connection_id=item["id"]).status == 404
        assert other.call("update_connection", connection_id=item["id"], body={"description": "x"}).status == 404
        assert other.call("delete_connection", connection_id=item["id"]).status == 404
        listed = [c["id"] for c in other.call("list_connections").json()["items"]]
        assert item["id"] not in listed
        assert owner.call("get_connection", connection_id=item["id"]).json()["description"] != "x"


def test_tenant_comes_only_from_claims(api: InProcessApi) -> None:
    missing = api.call("list_connections", claims={"sub": "alice"})
    assert missing.status == 401
    assert missing.json()["error"]["code"] == "invalid_tenant_claim"
    odd = api.call("list_connections", claims={"tenant_id": "acme#CONNECTION#x"})
    assert odd.status == 401
    # A tenant named in the body is an unknown field, not an override.
    sneaky = api.call("create_connection", body=connection_body(name="sneaky", tenant_id="globex"))
    assert sneaky.status == 422


def test_stale_patch_with_if_match_is_refused(api: InProcessApi) -> None:
    created = create(api, name="stale")
    etag = f'"{created["version"]}"'
    assert (
        api.call(
            "update_connection", connection_id=created["id"], body={"description": "1"}, headers={"if-match": etag}
        ).status
        == 200
    )
    stale = api.call(
        "update_connection", connection_id=created["id"], body={"description": "2"}, headers={"if-match": etag}
    )
    assert stale.status == 412
    assert stale.json()["error"]["code"] == "stale_update"
    assert api.call("get_connection", connection_id=created["id"]).json()["description"] == "1"


def test_concurrent_patches_never_overwrite_silently(api: InProcessApi) -> None:
    """Eight writers at once, as eight Lambda instances would be: each has its own handler."""
    import json

    from oauth_connections.entrypoints.http.connections import update_connection_router
    from oauth_connections.entrypoints.http.resolver import http_handler
    from tests.conftest import LambdaContext

    created = create(api, name="racing")
    statuses: list[int] = []
    barrier = threading.Barrier(8)
    event = sample_event("update_connection")
    event["pathParameters"] = {"connection_id": created["id"]}
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/connections/{created['id']}"
    event["headers"].pop("if-match")

    def patch(i: int) -> None:
        handler = http_handler(update_connection_router)
        own = json.loads(json.dumps(event)) | {"body": json.dumps({"description": f"writer {i}"})}
        barrier.wait()
        statuses.append(handler(own, LambdaContext())["statusCode"])  # type: ignore[arg-type]

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 8
    assert set(statuses) <= {200, 409}
    assert 200 in statuses
    final = api.call("get_connection", connection_id=created["id"]).json()
    # Every accepted write bumped the version exactly once: none was lost by an overwrite.
    assert final["version"] == created["version"] + statuses.count(200)


def test_secret_is_stored_only_as_ciphertext(api: InProcessApi, service_env: Resources) -> None:
    created = create(api, name="ciphertext only", client_secret="plain-secret-value-123")
    item = boto3.client("dynamodb").get_item(
        TableName=service_env.table_name,
        Key={"pk": {"S": "TENANT#acme"}, "sk": {"S": f"CONNECTION#{created['id']}"}},
    )["Item"]
    raw = repr(item)
    assert "plain-secret-value-123" not in raw
    assert "client_secret_ciphertext" in item and "B" in item["client_secret_ciphertext"]
    assert b"plain-secret-value-123" not in item["client_secret_ciphertext"]["B"]


def test_secret_can_be_removed_only_with_auth_method_none(api: InProcessApi) -> None:
    created = create(api, name="public client")
    refused = api.call("update_connection", connection_id=created["id"], body={"client_secret": None})
    assert refused.status == 422
    ok = api.call(
        "update_connection", connection_id=created["id"], body={"client_secret": None, "token_auth_method": "none"}
    )
    assert ok.status == 200
    assert ok.json()["has_client_secret"] is False


def test_openapi_document_describes_every_route(api: InProcessApi) -> None:
    response = api.call("openapi")
    assert response.status == 200
    document = response.json()
    paths = document["paths"]
    assert set(paths) == {
        "/connections",
        "/connections/{connection_id}",
        "/connections/{connection_id}/authorize",
        "/connections/{connection_id}/refresh",
        "/connections/{connection_id}/test",
        "/connections/{connection_id}/activity",
        "/activity",
        "/feeds",
        "/feeds/{feed_id}",
        "/feeds/{feed_id}/run",
        "/feeds/{feed_id}/runs",
        "/feeds/{feed_id}/activity",
        "/openapi.json",
        "/providers",
    }
    assert set(paths["/connections"]) == {"get", "post"}
    assert set(paths["/connections/{connection_id}"]) == {"get", "patch", "delete"}
    post = paths["/connections"]["post"]
    assert {"201", "409", "422"} <= set(post["responses"])
    create_schema = document["components"]["schemas"]["ConnectionCreate"]
    assert "client_secret" in create_schema["properties"]
    assert "client_secret" not in document["components"]["schemas"]["ConnectionOut"]["properties"]


def _served_document(api: InProcessApi, monkeypatch: pytest.MonkeyPatch, **environment: str) -> dict[str, Any]:
    from oauth_connections.core.config import get_settings

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    response = api.call("openapi")
    assert response.status == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def test_openapi_document_names_the_scopes_of_each_operation(
    api: InProcessApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = _served_document(api, monkeypatch, READ_SCOPE="crm/read", MANAGE_SCOPE="crm/admin")
    scheme = document["components"]["securitySchemes"]["platformJwt"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    paths = document["paths"]
    either = [{"platformJwt": ["crm/read"]}, {"platformJwt": ["crm/admin"]}]
    assert paths["/connections"]["get"]["security"] == either
    assert paths["/feeds/{feed_id}/runs"]["get"]["security"] == either
    assert paths["/openapi.json"]["get"]["security"] == either
    assert paths["/connections"]["post"]["security"] == [{"platformJwt": ["crm/admin"]}]
    assert paths["/feeds/{feed_id}/run"]["post"]["security"] == [{"platformJwt": ["crm/admin"]}]
    assert paths["/connections/{connection_id}/test"]["post"]["security"] == [{"platformJwt": ["crm/admin"]}]
    forbidden = paths["/connections/{connection_id}"]["delete"]["responses"]["403"]
    assert forbidden["content"]["application/json"]["schema"]["properties"]["message"]["const"] == "Forbidden"


def test_openapi_document_without_scopes_asks_only_for_the_token(
    api: InProcessApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = _served_document(api, monkeypatch, REQUIRE_SCOPES="false")
    operations = [operation for methods in document["paths"].values() for operation in methods.values()]
    assert len(operations) == 20
    for operation in operations:
        assert operation["security"] == [{"platformJwt": []}]
        assert "403" not in operation["responses"]
