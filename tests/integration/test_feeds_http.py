"""Product feeds end to end on the local stack: POST /feeds/{id}/run queues to FeedFetchQueue, the stack's
SQS poller delivers it to FeedFetchFunction, which fetches from a loopback feed server (tests/support/
feed_server.py) with a token of a connection made through the real provider's own pages, and streams the
feed into the versioned FeedsBucket. Each test asserts the run record the API reports and what S3 holds.

The stack is this module's own (small FEED_MAX_BYTES, read timeout and download deadline), and so is the
provider, whose access tokens live ACCESS_TOKEN_TTL seconds: less than the minute of validity the fetch asks
for, so every fetch refreshes first, and a token the feed server has seen really expires within a test.
"""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.feed_server import (
    Canary,
    Catalog,
    FeedServer,
    Malformed,
    Oversized,
    Redirect,
    Stall,
    Transfer,
    Trickle,
    Unauthorized,
    catalog_bytes,
    catalog_facts,
    provider_introspection,
)
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider, standard_clients
from tests.support.stack_fixtures import ApiClient
from tests.support.user_agent import walk_authorization

FEED_MAX_BYTES = 16 * 1024 * 1024
READ_TIMEOUT_SECONDS = 2
FEED_MAX_SECONDS = 5  # the whole download
TRICKLE_SECONDS = 12  # a feed sending a byte every half second for this long
ACCESS_TOKEN_TTL = 5
CATALOG_OFFERS = 12_000  # about 11 MB: stored in two multipart parts
SMALL_OFFERS = 300  # the last good content of the failure tests
RUN_WAIT_SECONDS = 30.0
SLOW = READ_TIMEOUT_SECONDS + 3  # a stall outlasting the read timeout
METADATA_URL = "http://169.254.169.254/latest/meta-data/"
PRIVATE_URL = "http://10.0.0.1/feed"


# ------------------------------------------------------------------ the module's world


@pytest.fixture(scope="module")
def feeds_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=tmp_path_factory.mktemp("devstack-feeds"),
        env_overrides={
            "FEED_MAX_BYTES": str(FEED_MAX_BYTES),
            "FEED_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT_SECONDS),
            "FEED_MAX_SECONDS": str(FEED_MAX_SECONDS),
        },
        schedules=False,
        with_provider=False,
        echo_logs=False,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def feeds_provider(feeds_stack: Stack) -> Iterator[OidcProvider]:
    clients = standard_clients(feeds_stack.api_url + "/oauth2/callback")
    with OidcProvider(clients, access_token_ttl=ACCESS_TOKEN_TTL) as running:
        yield running


@pytest.fixture(scope="module")
def feed_server(feeds_provider: OidcProvider) -> Iterator[FeedServer]:
    with FeedServer(introspect=provider_introspection(feeds_provider)) as server:
        yield server


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    with Canary() as listener:
        socket.create_connection((listener.host, listener.port), timeout=5).close()
        deadline = time.monotonic() + 5
        while listener.connections != 1:  # it does see a connection: its count of 1 must stay 1
            assert time.monotonic() < deadline, "the canary saw no connection"
            time.sleep(0.05)
        yield listener


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    api: ApiClient


@pytest.fixture(scope="module")
def shop(feeds_stack: Stack) -> Tenant:
    tenant_id = f"feeds-{uuid.uuid4().hex[:10]}"
    return Tenant(tenant_id, ApiClient(feeds_stack).as_tenant(tenant_id))


@pytest.fixture(scope="module")
def connection_id(shop: Tenant, feeds_provider: OidcProvider, feed_server: FeedServer) -> str:
    """The shop's connection to the provider, made with the real authorization flow."""
    return connect(shop.api, feeds_provider, feed_server)


# ------------------------------------------------------------------ helpers


def connect(api: ApiClient, provider: OidcProvider, server: FeedServer) -> str:
    created = create_connection(api, provider, server)
    response = api.post(
        f"/connections/{created['id']}/authorize", json={"return_url": f"http://127.0.0.1:{server.port}/done"}
    )
    assert response.status_code == 200, response.text
    browser = requests.Session()
    result = walk_authorization(response.json()["redirect_url"], session=browser)
    assert result.callback_url.startswith(api.stack.api_url + "/oauth2/callback?"), result.callback_url
    callback = browser.get(result.callback_url, allow_redirects=False, timeout=30)
    assert callback.status_code == 302, callback.text
    assert callback.headers["Location"].startswith(f"http://127.0.0.1:{server.port}/done?")
    assert "status=connected" in callback.headers["Location"], callback.headers["Location"]
    assert connection_status(api, created["id"]) == "connected"
    return str(created["id"])


def create_connection(api: ApiClient, provider: OidcProvider, server: FeedServer) -> dict[str, Any]:
    response = api.post(
        "/connections",
        json={
            "name": f"feeds {uuid.uuid4().hex[:8]}",
            "client_id": BASIC_CLIENT_ID,
            "client_secret": BASIC_CLIENT_SECRET,
            "token_auth_method": "client_secret_basic",
            "issuer": provider.issuer,
            "scopes": ["api.read"],
            "allowed_urls": [server.url("/protected/")],
        },
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def connection_status(api: ApiClient, connection_id: str) -> str:
    response = api.get(f"/connections/{connection_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def create_feed(api: ApiClient, url: str, connection_id: str | None = None) -> str:
    body: dict[str, Any] = {"name": f"feed {uuid.uuid4().hex[:8]}", "url": url, "format": "yml"}
    if connection_id:
        body["connection_id"] = connection_id
    response = api.post("/feeds", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def feed_view(api: ApiClient, feed_id: str) -> dict[str, Any]:
    response = api.get(f"/feeds/{feed_id}")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def runs_of(api: ApiClient, feed_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/feeds/{feed_id}/runs", params={"limit": 100})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def run_feed(api: ApiClient, feed_id: str) -> dict[str, Any]:
    """POST /feeds/{id}/run, then poll the runs until the new one has finished (bounded)."""
    before = len(runs_of(api, feed_id))
    response = api.post(f"/feeds/{feed_id}/run")
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "queued"}
    deadline = time.monotonic() + RUN_WAIT_SECONDS
    while True:
        runs = runs_of(api, feed_id)
        if len(runs) > before and runs[0]["status"] != "running":
            assert len(runs) == before + 1, runs
            return runs[0]
        assert time.monotonic() < deadline, f"the run did not finish within {RUN_WAIT_SECONDS}s: {runs[:1]}"
        time.sleep(0.1)


def assert_run(
    run: dict[str, Any],
    *,
    status: str,
    http_status: int | None,
    size: int = 0,
    items: int | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> None:
    observed = {k: run[k] for k in ("status", "http_status", "bytes", "items", "error_code", "error_message")}
    expected = {
        "status": status,
        "http_status": http_status,
        "bytes": size,
        "items": items,
        "error_code": error_code,
        "error_message": error_message,
    }
    assert observed == expected, run
    assert run["trigger"] == "manual" and run["finished_at"] and run["duration_ms"] is not None, run
    if status != "succeeded":
        assert run["s3_key"] is None and run["s3_version"] is None, run


def object_key(tenant: Tenant, feed_id: str) -> str:
    return f"feeds/{tenant.tenant_id}/{feed_id}/latest.xml"


def stored_object(stack: Stack, key: str, version: str | None = None) -> tuple[bytes, str]:
    """The object's bytes and version id (the current version unless one is named)."""
    extra = {"VersionId": version} if version else {}
    answer = stack.boto3_client("s3").get_object(Bucket=stack.physical_ids["FeedsBucket"], Key=key, **extra)
    return answer["Body"].read(), str(answer["VersionId"])


def versions_of(stack: Stack, key: str) -> list[str]:
    """Every stored version of the key, newest first."""
    answer = stack.boto3_client("s3").list_object_versions(Bucket=stack.physical_ids["FeedsBucket"], Prefix=key)
    return [v["VersionId"] for v in answer.get("Versions", []) if v["Key"] == key]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class GoodFeed:
    feed_id: str
    path: str
    key: str
    run: dict[str, Any]


def good_feed(
    stack: Stack, tenant: Tenant, server: FeedServer, path: str, connection_id: str | None = None
) -> GoodFeed:
    """A feed whose first run stored SMALL_OFFERS offers: the last good object later failures must keep."""
    url = server.serve(path, Catalog(offers=SMALL_OFFERS), protected=connection_id is not None)
    feed_id = create_feed(tenant.api, url, connection_id)
    run = run_feed(tenant.api, feed_id)
    facts = catalog_facts(SMALL_OFFERS)
    assert_run(run, status="succeeded", http_status=200, size=facts.size, items=SMALL_OFFERS)
    key = object_key(tenant, feed_id)
    assert run["s3_key"] == key
    return GoodFeed(feed_id, path, key, run)


def assert_last_good_kept(stack: Stack, tenant: Tenant, good: GoodFeed, failed_status: str = "failed") -> None:
    """S3 still holds exactly the good run's object, as its only version; the feed still names it."""
    body, version = stored_object(stack, good.key)
    assert version == good.run["s3_version"]
    assert versions_of(stack, good.key) == [good.run["s3_version"]]
    assert digest(body) == catalog_facts(SMALL_OFFERS).sha256
    view = feed_view(tenant.api, good.feed_id)
    assert view["last_status"] == failed_status
    assert view["last_items"] == SMALL_OFFERS


def fail_once(
    stack: Stack, tenant: Tenant, server: FeedServer, good: GoodFeed, behaviour: Any
) -> tuple[dict[str, Any], list[Any]]:
    """Switch the feed's path to a failing behaviour, run once; the run and the requests it made."""
    server.serve(good.path, behaviour)
    seen = len(server.requests_to(good.path))
    run = run_feed(tenant.api, good.feed_id)
    assert_last_good_kept(stack, tenant, good)
    return run, server.requests_to(good.path)[seen:]


def finished_transfer(server: FeedServer, path: str) -> Transfer:
    """The path's latest streamed body, once the server has stopped sending it (bounded)."""
    deadline = time.monotonic() + 10
    while True:
        transfer = server.transfers_of(path)[-1]
        if transfer.completed or transfer.dropped:
            return transfer
        assert time.monotonic() < deadline, transfer
        time.sleep(0.05)


def refresh_grants(provider: OidcProvider) -> dict[str, int]:
    """refresh_token grants the provider answered so far, by outcome."""
    outcomes: dict[str, int] = provider.stats()["token_requests"]["by_grant_type_and_outcome"].get("refresh_token", {})
    return dict(outcomes)


def revoke_grant(provider: OidcProvider, server: FeedServer, path: str) -> None:
    """The user revokes the app at the provider: revoking the access token the feed server saw last on `path`
    revokes every token of its grant, the refresh token too."""
    token = server.requests_to(path)[-1].bearer
    assert token
    provider.revoke(token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, token_type_hint="access_token")
    assert not provider.introspect(token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"]
    server.forget_tokens()


def wait_until_expired(provider: OidcProvider, token: str) -> None:
    deadline = time.monotonic() + ACCESS_TOKEN_TTL + 5
    while provider.introspect(token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"]:
        assert time.monotonic() < deadline, "the access token did not expire"
        time.sleep(0.25)


# ------------------------------------------------------------------ 1. a protected catalog, conditional, refreshed


def test_protected_catalog_is_stored_then_not_modified_then_fetched_with_a_refreshed_token(
    feeds_stack: Stack, shop: Tenant, feeds_provider: OidcProvider, feed_server: FeedServer, connection_id: str
) -> None:
    path = "/protected/catalog.yml"
    url = feed_server.serve(path, Catalog(offers=CATALOG_OFFERS), protected=True)
    feed_id = create_feed(shop.api, url, connection_id)
    key = object_key(shop, feed_id)
    facts = catalog_facts(CATALOG_OFFERS)
    assert facts.size > 8 * 1024 * 1024  # several MB: more than one multipart part

    first = run_feed(shop.api, feed_id)
    assert_run(first, status="succeeded", http_status=200, size=facts.size, items=CATALOG_OFFERS)
    assert first["s3_key"] == key and first["s3_version"]
    body, version = stored_object(feeds_stack, key)
    assert version == first["s3_version"]
    assert len(body) == facts.size and digest(body) == facts.sha256  # exactly the served bytes
    assert body == catalog_bytes(CATALOG_OFFERS)
    head = feeds_stack.boto3_client("s3").head_object(Bucket=feeds_stack.physical_ids["FeedsBucket"], Key=key)
    assert head["ContentType"] == "application/xml" and head["ServerSideEncryption"] == "aws:kms"
    [request] = feed_server.requests_to(path)
    assert request.status == 200 and request.authorization and request.bearer
    assert request.if_none_match is None and request.if_modified_since is None

    second = run_feed(shop.api, feed_id)
    assert_run(second, status="not_modified", http_status=304)
    conditional = feed_server.requests_to(path)[1]
    assert conditional.status == 304 and conditional.authorization
    assert conditional.if_none_match == facts.etag  # the stored ETag sent back
    assert versions_of(feeds_stack, key) == [first["s3_version"]]  # nothing new stored
    view = feed_view(shop.api, feed_id)
    assert view["last_status"] == "not_modified" and view["last_items"] == CATALOG_OFFERS

    # The token the feed server saw last expires, and the shop publishes a new catalog.
    expired = feed_server.requests_to(path)[-1].bearer
    assert expired
    wait_until_expired(feeds_provider, expired)
    feed_server.forget_tokens()
    refused = requests.get(url, headers={"Authorization": f"Bearer {expired}"}, timeout=10)
    assert refused.status_code == 401  # the feed server no longer takes it
    grants_before = refresh_grants(feeds_provider)
    feed_server.serve(path, Catalog(offers=CATALOG_OFFERS, revision=2))
    fresh = catalog_facts(CATALOG_OFFERS, revision=2)
    assert fresh.sha256 != facts.sha256

    third = run_feed(shop.api, feed_id)
    assert_run(third, status="succeeded", http_status=200, size=fresh.size, items=CATALOG_OFFERS)
    accepted = feed_server.requests_to(path)[-1]
    assert len(feed_server.requests_to(path)) == 4  # two runs before, the probe above, this run
    assert accepted.status == 200 and accepted.bearer not in (None, expired)
    assert accepted.if_none_match == facts.etag  # still conditional: the content changed, so a 200
    assert refresh_grants(feeds_provider).get("success", 0) == grants_before.get("success", 0) + 1
    assert third["s3_version"] not in (None, first["s3_version"])
    body, version = stored_object(feeds_stack, key)
    assert version == third["s3_version"] and digest(body) == fresh.sha256
    assert versions_of(feeds_stack, key) == [third["s3_version"], first["s3_version"]]
    assert connection_status(shop.api, connection_id) == "connected"


# ------------------------------------------------------------------ 2. failures keep the last good object


def test_a_feed_refusing_every_token_is_unauthorized_after_one_retry(
    feeds_stack: Stack, shop: Tenant, feeds_provider: OidcProvider, feed_server: FeedServer, connection_id: str
) -> None:
    good = good_feed(feeds_stack, shop, feed_server, "/protected/refusing.yml", connection_id)
    grants_before = refresh_grants(feeds_provider)
    run, requests_made = fail_once(feeds_stack, shop, feed_server, good, Unauthorized())
    assert_run(
        run,
        status="failed",
        http_status=401,
        error_code="unauthorized",
        error_message="the feed server refused the token, also after a refresh",
    )
    assert [(r.status, r.authorization) for r in requests_made] == [(401, True), (401, True)]  # exactly two
    # One refresh at the provider (the token was about to expire); the 401's forced refresh is debounced,
    # because the token was refreshed a moment ago, so the retry carries the same token.
    assert refresh_grants(feeds_provider).get("success", 0) == grants_before.get("success", 0) + 1
    assert requests_made[0].bearer == requests_made[1].bearer


def test_an_oversized_feed_is_cut_off_at_the_limit(feeds_stack: Stack, shop: Tenant, feed_server: FeedServer) -> None:
    good = good_feed(feeds_stack, shop, feed_server, "/public/oversized.yml")
    too_large = f"the feed is larger than {FEED_MAX_BYTES} bytes"
    planned = 8 * FEED_MAX_BYTES

    # Streamed without a length: read up to the limit, then the connection is dropped.
    run, requests_made = fail_once(feeds_stack, shop, feed_server, good, Oversized(planned))
    assert_run(run, status="failed", http_status=200, error_code="too_large", error_message=too_large)
    assert len(requests_made) == 1
    transfer = finished_transfer(feed_server, good.path)
    assert transfer.dropped and not transfer.completed
    assert FEED_MAX_BYTES < transfer.sent < 2 * FEED_MAX_BYTES, transfer  # the limit was read, the rest never was

    # A declared Content-Length over the limit: refused before reading the body.
    run, requests_made = fail_once(feeds_stack, shop, feed_server, good, Oversized(planned, declare_length=True))
    assert_run(run, status="failed", http_status=200, error_code="too_large", error_message=too_large)
    transfer = finished_transfer(feed_server, good.path)
    assert transfer.dropped and transfer.sent < FEED_MAX_BYTES, transfer


def test_malformed_xml_is_invalid_content(feeds_stack: Stack, shop: Tenant, feed_server: FeedServer) -> None:
    good = good_feed(feeds_stack, shop, feed_server, "/public/malformed.yml")
    run, requests_made = fail_once(feeds_stack, shop, feed_server, good, Malformed())
    assert run["error_message"].startswith("malformed XML: mismatched tag: line 4"), run
    assert_run(
        run,
        status="failed",
        http_status=200,
        error_code="invalid_content",
        error_message=run["error_message"],
    )
    assert [r.status for r in requests_made] == [200]


def test_redirects_to_private_addresses_are_refused_before_connecting(
    feeds_stack: Stack, shop: Tenant, feed_server: FeedServer, canary: Canary, connection_id: str
) -> None:
    public = good_feed(feeds_stack, shop, feed_server, "/public/moved.yml")
    for target, address in ((PRIVATE_URL, "10.0.0.1"), (METADATA_URL, "169.254.169.254"), (canary.url, canary.host)):
        run, requests_made = fail_once(feeds_stack, shop, feed_server, public, Redirect(target))
        assert_run(
            run,
            status="failed",
            http_status=None,
            error_code="unsafe_url",
            error_message=f"address {address} is not a public address",
        )
        assert [r.status for r in requests_made] == [302], address
    assert canary.connections == 1  # the private address on this machine was never connected to

    # A protected feed: the redirect leaves the connection's allowed_urls, so the token never goes there.
    protected = good_feed(feeds_stack, shop, feed_server, "/protected/moved.yml", connection_id)
    for target in (METADATA_URL, canary.url):
        run, requests_made = fail_once(feeds_stack, shop, feed_server, protected, Redirect(target))
        assert_run(
            run,
            status="failed",
            http_status=None,
            error_code="url_not_allowed",
            error_message=f"{target} is not under the connection's allowed_urls",
        )
        assert [(r.status, r.authorization) for r in requests_made] == [(302, True)]
    assert canary.connections == 1


def test_a_stalling_feed_times_out(feeds_stack: Stack, shop: Tenant, feed_server: FeedServer) -> None:
    good = good_feed(feeds_stack, shop, feed_server, "/public/stalling.yml")
    run, _ = fail_once(feeds_stack, shop, feed_server, good, Stall(SLOW))  # headers, then silence
    assert_run(
        run, status="failed", http_status=200, error_code="timeout", error_message="the feed server stopped sending"
    )
    assert READ_TIMEOUT_SECONDS * 1000 <= run["duration_ms"] < SLOW * 1000, run
    run, _ = fail_once(feeds_stack, shop, feed_server, good, Stall(SLOW, headers_first=False))  # nothing at all
    assert_run(
        run,
        status="failed",
        http_status=None,
        error_code="timeout",
        error_message="the feed server did not answer in time",
    )
    assert READ_TIMEOUT_SECONDS * 1000 <= run["duration_ms"] < SLOW * 1000, run


def test_a_trickling_feed_is_stopped_at_the_download_deadline(
    feeds_stack: Stack, shop: Tenant, feed_server: FeedServer
) -> None:
    """Each read gets a byte well within the read timeout, so only FEED_MAX_SECONDS can stop this download."""
    good = good_feed(feeds_stack, shop, feed_server, "/public/trickling.yml")
    run, _ = fail_once(feeds_stack, shop, feed_server, good, Trickle(TRICKLE_SECONDS))
    assert_run(
        run,
        status="failed",
        http_status=200,
        error_code="timeout",
        error_message="the feed took too long to download",
    )
    assert run["duration_ms"] < (FEED_MAX_SECONDS + READ_TIMEOUT_SECONDS) * 1000, run  # stopped at the deadline
    transfer = finished_transfer(feed_server, good.path)
    assert transfer.dropped and not transfer.completed, transfer  # ... by dropping the connection


def test_a_connection_whose_grant_was_revoked_needs_reauthorization(
    feeds_stack: Stack, shop: Tenant, feeds_provider: OidcProvider, feed_server: FeedServer
) -> None:
    connection = connect(shop.api, feeds_provider, feed_server)  # its own: this test breaks it
    good = good_feed(feeds_stack, shop, feed_server, "/protected/reauthorize.yml", connection)
    revoke_grant(feeds_provider, feed_server, good.path)
    grants_before = refresh_grants(feeds_provider)

    run, requests_made = fail_once(feeds_stack, shop, feed_server, good, Catalog(offers=SMALL_OFFERS))
    assert_run(
        run,
        status="failed",
        http_status=None,
        error_code="reauthorization_required",
        error_message="no token for the feed's connection: the provider refused the refresh token",
    )
    assert requests_made == []  # no token, so no request to the feed server
    assert refresh_grants(feeds_provider).get("invalid_grant", 0) == grants_before.get("invalid_grant", 0) + 1
    assert connection_status(shop.api, connection) == "reauthorization_required"

    # From now on the fetch fails before calling the provider at all.
    run, requests_made = fail_once(feeds_stack, shop, feed_server, good, Catalog(offers=SMALL_OFFERS))
    assert_run(
        run,
        status="failed",
        http_status=None,
        error_code="reauthorization_required",
        error_message="no token for the feed's connection: the connection must be authorized again",
    )
    assert requests_made == []
    assert refresh_grants(feeds_provider) == grants_before | {
        "invalid_grant": grants_before.get("invalid_grant", 0) + 1
    }


# ------------------------------------------------------------------ 3. a public gzip feed


def test_a_public_gzip_feed_is_stored_decoded(feeds_stack: Stack, shop: Tenant, feed_server: FeedServer) -> None:
    offers = 2_000
    path = "/public/catalog.yml.gz"
    feed_id = create_feed(shop.api, feed_server.serve(path, Catalog(offers=offers, gzip=True)))
    facts = catalog_facts(offers)

    run = run_feed(shop.api, feed_id)
    assert_run(run, status="succeeded", http_status=200, size=facts.size, items=offers)
    body, version = stored_object(feeds_stack, object_key(shop, feed_id))
    assert version == run["s3_version"]
    assert body == catalog_bytes(offers)  # the decoded catalog, not the gzip stream
    [request] = feed_server.requests_to(path)
    assert not request.authorization and "gzip" in (request.accept_encoding or "")
    transfer = finished_transfer(feed_server, path)
    assert transfer.completed and transfer.sent < facts.size // 4  # it really was compressed on the wire


# ------------------------------------------------------------------ 4. tenant isolation


def test_feeds_are_isolated_between_tenants(
    feeds_stack: Stack, shop: Tenant, feeds_provider: OidcProvider, feed_server: FeedServer, connection_id: str
) -> None:
    other = Tenant(f"feeds-other-{uuid.uuid4().hex[:8]}", ApiClient(feeds_stack))
    other = Tenant(other.tenant_id, other.api.as_tenant(other.tenant_id))
    theirs = create_connection(other.api, feeds_provider, feed_server)["id"]
    url = feed_server.serve("/protected/isolated.yml", Catalog(offers=SMALL_OFFERS), protected=True)

    # A feed cannot name another tenant's connection, on create or on update.
    refused = shop.api.post("/feeds", json={"name": "borrowed", "url": url, "connection_id": theirs})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "validation_error"
    assert "connection_id names no connection of this tenant" in refused.text
    feed_id = create_feed(shop.api, url, connection_id)
    patched = shop.api.patch(f"/feeds/{feed_id}", json={"connection_id": theirs})
    assert patched.status_code == 422, patched.text
    # ... nor a URL outside its own connection's allowed_urls.
    outside = shop.api.post(
        "/feeds", json={"name": "outside", "url": feed_server.url("/public/x.yml"), "connection_id": connection_id}
    )
    assert outside.status_code == 422 and "allowed_urls" in outside.text, outside.text

    # The other tenant sees nothing of the shop's feed.
    for response in (
        other.api.get(f"/feeds/{feed_id}"),
        other.api.get(f"/feeds/{feed_id}/runs"),
        other.api.post(f"/feeds/{feed_id}/run"),
        other.api.patch(f"/feeds/{feed_id}", json={"enabled": False}),
        other.api.delete(f"/feeds/{feed_id}"),
    ):
        assert response.status_code == 404, (response.request.method, response.request.url, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert other.api.get("/feeds").json() == {"items": [], "next_cursor": None}
    time.sleep(1.0)  # a queued run would have been delivered by now
    assert runs_of(shop.api, feed_id) == []
    assert feed_server.requests_to("/protected/isolated.yml") == []
    view = feed_view(shop.api, feed_id)
    assert view["enabled"] is True and view["connection_id"] == connection_id


# ------------------------------------------------------------------ 5. events


def test_fetches_publish_events_for_their_feed(
    feeds_stack: Stack, shop: Tenant, feed_server: FeedServer, connection_id: str
) -> None:
    protected = good_feed(feeds_stack, shop, feed_server, "/protected/events.yml", connection_id)
    not_modified = run_feed(shop.api, protected.feed_id)
    assert not_modified["status"] == "not_modified"
    refused, _ = fail_once(feeds_stack, shop, feed_server, protected, Unauthorized())
    public = good_feed(feeds_stack, shop, feed_server, "/public/events.yml")
    malformed, _ = fail_once(feeds_stack, shop, feed_server, public, Malformed())

    def events_of(feed_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            (event["detail-type"], event["detail"]["run_id"], event["detail"])
            for event in feeds_stack.published_events()
            if event["detail-type"].startswith("feed.") and event["detail"].get("feed_id") == feed_id
        ]

    assert [(kind, run) for kind, run, _ in events_of(protected.feed_id)] == [
        ("feed.fetched", protected.run["id"]),
        ("feed.fetched", not_modified["id"]),
        ("feed.fetch_failed", refused["id"]),
    ]
    fetched, unchanged, failed = (detail for _, _, detail in events_of(protected.feed_id))
    common = {"tenant_id": shop.tenant_id, "connection_id": connection_id, "feed_id": protected.feed_id}
    assert (
        fetched.items()
        >= (
            common | {"status": "succeeded", "reason": "manual", "bytes": protected.run["bytes"], "items": SMALL_OFFERS}
        ).items()
    )
    assert unchanged.items() >= (common | {"status": "not_modified", "bytes": 0, "items": None}).items()
    assert failed.items() >= (common | {"status": "failed", "reason": "unauthorized"}).items()

    assert [(kind, run) for kind, run, _ in events_of(public.feed_id)] == [
        ("feed.fetched", public.run["id"]),
        ("feed.fetch_failed", malformed["id"]),
    ]
    failed = events_of(public.feed_id)[1][2]
    assert failed.items() >= {"connection_id": "", "status": "failed", "reason": "invalid_content"}.items()
    for event in feeds_stack.published_events():
        if event["detail-type"].startswith("feed."):
            assert event["source"] == "oauth-connections"
            assert "access_token" not in str(event) and "Bearer" not in str(event)
