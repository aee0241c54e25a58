"""GetTokenFunction in-process: the hot path, the single-flight refresh, and every failure."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import boto3
import pytest

from oauth_connections.connections import tokens
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import get_settings
from oauth_connections.oauth import token_endpoint
from oauth_connections.storage.connections import CONNECTIONS, ConnectionRecord, acquire_lease
from tests.conftest import EventCapture, InProcessApi, LambdaContext, Resources, load_handler
from tests.support.aws_calls import count_aws_calls
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.support.token_endpoint import RESET, Scripted, ScriptedTokenEndpoint
from tests.unit.flow_helpers import connect, create_connection


def get_token(tenant: str, connection_id: str, **fields: Any) -> dict[str, Any]:
    event = {"tenant_id": tenant, "connection_id": connection_id} | fields
    result: dict[str, Any] = load_handler("get_token")(event, LambdaContext())
    return result


def age_tokens(tenant: str, connection_id: str, seconds: int = 3600) -> None:
    """Make the stored tokens look older than the force-refresh debounce."""
    record = CONNECTIONS.load(tenant, connection_id, consistent=True)
    past = datetime.now(UTC) - timedelta(seconds=seconds)
    record.update(
        actions=[ConnectionRecord.connected_at.set(past), ConnectionRecord.refreshed_at.set(past)],
        add_version_condition=False,
    )


def stored_tokens(tenant: str, connection_id: str) -> token_endpoint.TokenSet:
    record = CONNECTIONS.load(tenant, connection_id, consistent=True)
    token_set = tokens.decrypt_tokens(get_settings(), record)
    assert token_set is not None
    return token_set


@pytest.fixture
def connected(flow_api: InProcessApi, provider: OidcProvider) -> dict[str, Any]:
    connection = create_connection(flow_api, provider)
    connect(flow_api, provider, connection)
    return connection


def refreshes(provider: OidcProvider) -> int:
    return int(provider.stats()["token_requests"]["by_grant_type"].get("refresh_token", 0))


def test_warm_retrieval_costs_one_read_and_no_kms(
    flow_api: InProcessApi, connected: dict[str, Any], provider: OidcProvider
) -> None:
    first = get_token(flow_api.tenant, connected["id"])
    assert first["token_type"] == "Bearer"
    assert set(first["scopes"]) == {"api.read", "api.write"}
    assert datetime.fromisoformat(first["expires_at"]) > datetime.now(UTC)
    with count_aws_calls() as calls:
        for _ in range(5):
            assert get_token(flow_api.tenant, connected["id"]) == first
    assert calls == {"dynamodb.GetItem": 5}
    assert provider.introspect(first["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"tenant_id": "acme"},
        {"connection_id": "con_x"},
        {"tenant_id": 5, "connection_id": "con_x"},
        {"tenant_id": "acme", "connection_id": "con_x", "min_valid_seconds": "60"},
        {"tenant_id": "acme", "connection_id": "con_x", "min_valid_seconds": -1},
        {"tenant_id": "acme", "connection_id": "con_x", "force_refresh": "yes"},
        {"tenant_id": "acme", "connection_id": "con_x", "extra": 1},
        {"tenant_id": "a b", "connection_id": "con_x"},
        [],
        "string",
        None,
    ],
)
def test_malformed_requests_are_invalid_request(service_env: Resources, event: Any) -> None:
    result = load_handler("get_token")(event, LambdaContext())
    assert result["error"]["code"] == "invalid_request"
    assert "Traceback" not in str(result)


def test_unknown_and_foreign_connections_are_not_found(flow_api: InProcessApi, connected: dict[str, Any]) -> None:
    assert get_token("another-tenant", connected["id"])["error"]["code"] == "not_found"
    assert get_token(flow_api.tenant, "con_" + "0" * 26)["error"]["code"] == "not_found"
    assert get_token(flow_api.tenant, "../../etc")["error"]["code"] == "not_found"


def test_pending_connection_is_not_connected(flow_api: InProcessApi, provider: OidcProvider) -> None:
    connection = create_connection(flow_api, provider)
    assert get_token(flow_api.tenant, connection["id"])["error"]["code"] == "not_connected"


def test_force_refresh_rotates_once_and_keeps_the_grant(
    flow_api: InProcessApi, connected: dict[str, Any], provider: OidcProvider
) -> None:
    old = stored_tokens(flow_api.tenant, connected["id"])
    # A token obtained moments ago is not refreshed again for a consumer's 401 (debounce).
    before = refreshes(provider)
    assert get_token(flow_api.tenant, connected["id"], force_refresh=True)["access_token"] == old.access_token
    assert refreshes(provider) == before
    age_tokens(flow_api.tenant, connected["id"])
    fresh = get_token(flow_api.tenant, connected["id"], force_refresh=True)
    assert refreshes(provider) == before + 1
    assert fresh["access_token"] != old.access_token
    new = stored_tokens(flow_api.tenant, connected["id"])
    assert new.refresh_token and new.refresh_token != old.refresh_token
    assert provider.introspect(fresh["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True
    assert provider.introspect(old.refresh_token or "", BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is False


def test_expiring_token_is_refreshed(flow_api: InProcessApi, connected: dict[str, Any], provider: OidcProvider) -> None:
    before = refreshes(provider)
    token = get_token(flow_api.tenant, connected["id"], min_valid_seconds=3600)  # tokens live 600 s
    assert refreshes(provider) == before + 1
    assert "access_token" in token


def test_concurrent_forced_refreshes_reach_the_provider_once(
    flow_api: InProcessApi, connected: dict[str, Any], provider: OidcProvider
) -> None:
    age_tokens(flow_api.tenant, connected["id"])
    provider.set_token_endpoint_delay(300)  # widen the window for a race
    before = refreshes(provider)
    barrier = threading.Barrier(20)
    results: list[dict[str, Any]] = []

    def call() -> None:
        barrier.wait()
        results.append(get_token(flow_api.tenant, connected["id"], force_refresh=True))

    threads = [threading.Thread(target=call) for _ in range(20)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        provider.set_token_endpoint_delay(0)
    assert refreshes(provider) == before + 1
    assert all("access_token" in r for r in results), results
    assert len({r["access_token"] for r in results}) == 1
    token = results[0]["access_token"]
    assert provider.introspect(token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True
    age_tokens(flow_api.tenant, connected["id"])
    again = get_token(flow_api.tenant, connected["id"], force_refresh=True)
    assert refreshes(provider) == before + 2
    assert provider.introspect(again["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True


def test_dead_lease_holder_is_recovered(
    flow_api: InProcessApi, connected: dict[str, Any], provider: OidcProvider
) -> None:
    age_tokens(flow_api.tenant, connected["id"])
    record = CONNECTIONS.load(flow_api.tenant, connected["id"], consistent=True)
    assert acquire_lease(record, "crashed-holder", utcnow() + timedelta(seconds=2))
    before = refreshes(provider)
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda: results.append(get_token(flow_api.tenant, connected["id"], force_refresh=True)))
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert refreshes(provider) == before + 1
    assert len({r.get("access_token") for r in results}) == 1, results
    assert provider.introspect(results[0]["access_token"], BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True


# ------------------------------------------------------------------ failure classification


@pytest.fixture
def scripted(
    flow_api: InProcessApi, running_endpoint: ScriptedTokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, ScriptedTokenEndpoint]:
    """A connection with stored tokens whose token endpoint answers what the test scripts."""
    monkeypatch.setenv("OUTBOUND_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()
    running_endpoint.reset()
    body = {
        "name": f"scripted {time.time_ns()}",
        "client_id": "cid",
        "client_secret": "csecret",
        "authorization_url": "https://auth.example.com/authorize",
        "token_url": running_endpoint.url,
    }
    connection = flow_api.call("create_connection", body=body).json()
    original = token_endpoint.TokenSet("access-original", "Bearer", "refresh-original", int(time.time()) - 10, ("a",))
    tokens.store_connected(get_settings(), flow_api.tenant, connection["id"], original)
    return connection["id"], running_endpoint


TRANSIENT = [
    (Scripted(500, {"error": "server_error"}), None),
    (Scripted(502, "<html>bad gateway</html>", {"Content-Type": "text/html"}), None),
    (Scripted(503, ""), None),
    (Scripted(200, {"access_token": "late"}, delay=2.5), None),
    (RESET, None),
    (Scripted(200, "<html>maintenance</html>", {"Content-Type": "text/html"}), None),
    (Scripted(429, {"error": "slow_down"}, {"Retry-After": "90"}), 90),
]


@pytest.mark.parametrize(
    ("answer", "retry_after"), TRANSIENT, ids=["500", "502", "503", "timeout", "reset", "html", "429"]
)
def test_transient_failures_keep_tokens_and_cool_down(
    flow_api: InProcessApi,
    scripted: tuple[str, ScriptedTokenEndpoint],
    published_events: EventCapture,
    answer: Any,
    retry_after: int | None,
) -> None:
    connection_id, endpoint = scripted
    endpoint.queue(answer)
    result = get_token(flow_api.tenant, connection_id)
    assert result["error"]["code"] == "provider_unavailable"
    assert result["error"]["retry_after_seconds"] >= (retry_after or 1)
    assert stored_tokens(flow_api.tenant, connection_id).refresh_token == "refresh-original"
    record = CONNECTIONS.load(flow_api.tenant, connection_id, consistent=True)
    assert record.status == "connected"
    assert record.consecutive_failures == 1
    assert cast(str | None, record.lease_owner) is None
    assert published_events.of("connection.refresh_failed", connection_id)
    # The cooldown holds every caller off the provider.
    calls = len(endpoint.requests)
    again = get_token(flow_api.tenant, connection_id)
    assert again["error"]["code"] == "provider_unavailable"
    assert len(endpoint.requests) == calls


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_client", "unauthorized_client"])
def test_permanent_failures_need_reauthorization(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint], published_events: EventCapture, error: str
) -> None:
    connection_id, endpoint = scripted
    endpoint.queue(Scripted(400, {"error": error}))
    assert get_token(flow_api.tenant, connection_id)["error"]["code"] == "reauthorization_required"
    record = CONNECTIONS.load(flow_api.tenant, connection_id, consistent=True)
    assert record.status == "reauthorization_required"
    assert stored_tokens(flow_api.tenant, connection_id).refresh_token == "refresh-original"
    assert published_events.of("connection.reauthorization_required", connection_id)
    assert get_token(flow_api.tenant, connection_id)["error"]["code"] == "reauthorization_required"
    assert len(endpoint.requests) == 1


def test_provider_without_new_refresh_token_keeps_the_old_one(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint]
) -> None:
    connection_id, endpoint = scripted
    endpoint.queue(Scripted(200, {"access_token": "access-2", "token_type": "bearer", "expires_in": 3600}))
    assert get_token(flow_api.tenant, connection_id)["access_token"] == "access-2"
    stored = stored_tokens(flow_api.tenant, connection_id)
    assert stored.refresh_token == "refresh-original"
    assert endpoint.requests[0].form == {"grant_type": "refresh_token", "refresh_token": "refresh-original"}


def test_token_without_expiry_is_used_until_a_401(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint]
) -> None:
    connection_id, endpoint = scripted
    endpoint.queue(Scripted(200, {"access_token": "no-expiry", "token_type": "bearer"}))
    assert get_token(flow_api.tenant, connection_id)["access_token"] == "no-expiry"
    for _ in range(3):
        assert get_token(flow_api.tenant, connection_id, min_valid_seconds=86_400)["access_token"] == "no-expiry"
    assert len(endpoint.requests) == 1
    age_tokens(flow_api.tenant, connection_id)
    endpoint.queue(Scripted(200, {"access_token": "after-401", "token_type": "bearer"}))
    assert get_token(flow_api.tenant, connection_id, force_refresh=True)["access_token"] == "after-401"


def test_refresh_route_forces_a_refresh(flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint]) -> None:
    connection_id, endpoint = scripted
    endpoint.queue(Scripted(200, {"access_token": "via-api", "token_type": "bearer", "expires_in": 120}))
    response = flow_api.call("refresh_connection", connection_id=connection_id)
    assert response.status == 200, response.text
    assert response.json()["status"] == "connected"
    assert "via-api" not in response.text
    endpoint.queue(Scripted(503, ""))
    failing = flow_api.call("refresh_connection", connection_id=connection_id)
    assert failing.status == 503
    assert int(failing.headers["Retry-After"]) >= 1
    assert flow_api.as_tenant("intruder").call("refresh_connection", connection_id=connection_id).status == 404


def test_item_shows_no_plaintext_tokens(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint], service_env: Resources
) -> None:
    connection_id, _ = scripted
    item = boto3.client("dynamodb").get_item(
        TableName=service_env.table_name,
        Key={"pk": {"S": f"TENANT#{flow_api.tenant}"}, "sk": {"S": f"CONNECTION#{connection_id}"}},
    )["Item"]
    assert "refresh-original" not in repr(item)
    assert "access-original" not in repr(item)
