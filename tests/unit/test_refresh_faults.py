"""A refresh that meets a fault after the provider answered never loses the refresh token.

The faults are real: storage (the embedded DynamoDB) is taken down by a proxy in front of the embedded
AWS at the moment the provider answers, KMS answers its own error through the same proxy, and a lease
passes to someone else through real writes to the item. The rotating provider is the real one (a used
refresh token is dead there) or the scripted endpoint, which records the refresh token it was sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import pytest

from oauth_connections.connections import tokens
from oauth_connections.core import aws as aws_clients
from oauth_connections.core.clock import utcnow
from oauth_connections.core.config import get_settings
from oauth_connections.oauth import token_endpoint
from oauth_connections.security import crypto
from oauth_connections.storage.binding import MODELS
from oauth_connections.storage.connections import (
    ConnectionRecord,
    acquire_lease,
    replace_client_secret,
    store_refreshed,
)
from oauth_connections.storage.table import _Binding, _connection
from tests.conftest import InProcessApi, LambdaContext, LogCapture, load_handler
from tests.support.aws_fault_proxy import AwsFaultProxy
from tests.support.provider import OidcProvider
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint
from tests.support.token_proxy import HoldingTokenProxy
from tests.unit.flow_helpers import connect, create_connection
from tests.unit.scheduled_helpers import age_tokens, load, stored_tokens

R = ConnectionRecord
# Longer than the lease (5 s) and every store attempt in it, retries of the SDK included.
OUTAGE_SECONDS = 10.0


def rotated(access: str, refresh: str) -> Scripted:
    return Scripted(body={"access_token": access, "token_type": "bearer", "expires_in": 3600, "refresh_token": refresh})


def get_token(tenant: str, connection_id: str, remaining_millis: int = 25_000, **fields: Any) -> dict[str, Any]:
    event = {"tenant_id": tenant, "connection_id": connection_id} | fields
    result: dict[str, Any] = load_handler("get_token")(event, LambdaContext(remaining_millis))
    return result


def _new_aws_clients() -> None:
    """Every SDK client of the service is created again, so the endpoint in the environment applies; no key is cached."""
    _connection.cache_clear()
    _Binding.connections.clear()
    _Binding.table_name = None
    for model in MODELS:
        model._connection = None
    crypto._envelope.cache_clear()
    crypto._connection_keys.clear()
    aws_clients._clients.clear()


@pytest.fixture
def aws(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsFaultProxy]:
    """The service reaches the embedded AWS only through the fault proxy during the test."""
    with AwsFaultProxy(aws_endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        _new_aws_clients()
        try:
            yield proxy
        finally:
            monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
            _new_aws_clients()


@pytest.fixture
def scripted(
    flow_api: InProcessApi, running_endpoint: ScriptedTokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, ScriptedTokenEndpoint]:
    """A connection with expired tokens whose token and revocation endpoints answer what the test scripts."""
    monkeypatch.setenv("OUTBOUND_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("REFRESH_LEASE_SECONDS", "10")
    get_settings.cache_clear()
    running_endpoint.reset()
    body = {
        "name": f"faults {time.time_ns()}",
        "client_id": "cid",
        "client_secret": "csecret",
        "authorization_url": "https://auth.example.com/authorize",
        "token_url": running_endpoint.url,
        "revocation_url": running_endpoint.url.replace("/token", "/revoke"),
    }
    created = flow_api.call("create_connection", body=body)
    assert created.status == 201, created.text
    connection_id = created.json()["id"]
    original = token_endpoint.TokenSet("access-original", "Bearer", "refresh-original", int(time.time()) - 10, ("a",))
    tokens.store_connected(get_settings(), flow_api.tenant, connection_id, original)
    age_tokens(flow_api.tenant, connection_id)
    return connection_id, running_endpoint


def refresh_tokens_sent(endpoint: ScriptedTokenEndpoint) -> list[str]:
    return [r.form["refresh_token"] for r in endpoint.requests if r.form.get("grant_type") == "refresh_token"]


def expire_lease(tenant: str, connection_id: str) -> None:
    """The holder's lease runs out (as if it had stalled), nobody else has taken it yet."""
    load(tenant, connection_id).update(actions=[R.lease_expires_at.set(utcnow() - timedelta(seconds=1))])


# ------------------------------------------------------------------ the lease condition


def test_the_store_needs_the_lease_still_held(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint]
) -> None:
    connection_id, _ = scripted
    record = load(flow_api.tenant, connection_id)
    seen = int(record.token_version)
    assert acquire_lease(record, "holder-a", utcnow() + timedelta(seconds=30))
    assert not store_refreshed(load(flow_api.tenant, connection_id), "holder-b", seen, [R.status.set("error")])
    record = load(flow_api.tenant, connection_id)
    record.update(actions=[R.lease_expires_at.set(utcnow() - timedelta(seconds=1))], add_version_condition=False)
    assert not store_refreshed(load(flow_api.tenant, connection_id), "holder-a", seen, [R.status.set("error")])
    assert load(flow_api.tenant, connection_id).status == "connected"
    record = load(flow_api.tenant, connection_id)
    assert acquire_lease(record, "holder-a", utcnow() + timedelta(seconds=30))
    assert not store_refreshed(record, "holder-a", seen + 1, [R.status.set("error")])  # newer tokens
    assert store_refreshed(record, "holder-a", seen, [R.status.set("error")])
    stored = load(flow_api.tenant, connection_id)
    assert (stored.status, cast(object, stored.lease_owner), cast(object, stored.lease_expires_at)) == (
        "error",
        None,
        None,
    )


def test_a_holder_that_lost_its_lease_does_not_overwrite_a_newer_outcome(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint], service_logs: LogCapture
) -> None:
    """While the provider answers, the lease runs out and a new authorization stores newer tokens."""
    connection_id, endpoint = scripted
    newer = token_endpoint.TokenSet("access-newer", "Bearer", "refresh-newer", int(time.time()) + 3600)

    def lease_lost_and_newer_tokens_stored() -> None:
        load(flow_api.tenant, connection_id).update(actions=[R.lease_expires_at.set(utcnow() - timedelta(seconds=1))])
        tokens.store_connected(get_settings(), flow_api.tenant, connection_id, newer)

    answer = rotated("access-late", "refresh-late")
    answer.on_answer = lease_lost_and_newer_tokens_stored
    endpoint.queue(answer)
    assert get_token(flow_api.tenant, connection_id, force_refresh=True)["access_token"] == "access-newer"
    assert stored_tokens(flow_api.tenant, connection_id).refresh_token == "refresh-newer"
    assert cast(object, load(flow_api.tenant, connection_id).recovered_tokens_ciphertext) is None
    assert any("refresh result superseded" in line for line in service_logs.lines)


def test_a_holder_whose_lease_expired_leaves_its_tokens_to_the_next_holder(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint]
) -> None:
    connection_id, endpoint = scripted
    seen = int(load(flow_api.tenant, connection_id).token_version)
    answer = rotated("access-kept", "refresh-kept")
    answer.on_answer = lambda: expire_lease(flow_api.tenant, connection_id)
    endpoint.queue(answer)
    assert get_token(flow_api.tenant, connection_id, force_refresh=True)["access_token"] == "access-kept"
    record = load(flow_api.tenant, connection_id)
    assert int(record.token_version) == seen  # not stored over the expired lease...
    assert record.recovered_after_version == seen  # ...but kept for the next holder
    age_tokens(flow_api.tenant, connection_id)
    assert get_token(flow_api.tenant, connection_id, force_refresh=True)["access_token"] == "access-kept"
    assert refresh_tokens_sent(endpoint) == ["refresh-original"]  # adopted, the provider was not asked again
    adopted = load(flow_api.tenant, connection_id)
    assert (int(adopted.token_version), cast(object, adopted.recovered_tokens_ciphertext)) == (seen + 1, None)
    assert stored_tokens(flow_api.tenant, connection_id).refresh_token == "refresh-kept"


# ------------------------------------------------------------------ storage outages


def test_a_short_storage_outage_after_the_answer_is_retried_within_the_lease(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint], aws: AwsFaultProxy
) -> None:
    connection_id, endpoint = scripted
    answer = rotated("access-2", "refresh-2")
    answer.on_answer = lambda: aws.take_down("dynamodb", 1.0)
    endpoint.queue(answer)
    assert get_token(flow_api.tenant, connection_id, force_refresh=True)["access_token"] == "access-2"
    assert aws.refused["dynamodb"] >= 1
    record = load(flow_api.tenant, connection_id)
    assert cast(object, record.lease_owner) is None
    assert cast(object, record.recovered_tokens_ciphertext) is None
    assert stored_tokens(flow_api.tenant, connection_id).refresh_token == "refresh-2"
    age_tokens(flow_api.tenant, connection_id)
    endpoint.queue(rotated("access-3", "refresh-3"))
    assert get_token(flow_api.tenant, connection_id, force_refresh=True)["access_token"] == "access-3"
    assert refresh_tokens_sent(endpoint) == ["refresh-original", "refresh-2"]


@pytest.fixture
def rotating(
    flow_api: InProcessApi, provider: OidcProvider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, HoldingTokenProxy]]:
    """A connection authorized at the real provider (which rotates refresh tokens), reached through a
    forwarder that reports when the provider answered."""
    monkeypatch.setenv("OUTBOUND_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("REFRESH_LEASE_SECONDS", "5")
    get_settings.cache_clear()
    with HoldingTokenProxy(provider.token_endpoint) as proxy:
        connection = create_connection(flow_api, provider, token_url=proxy.url)
        connect(flow_api, provider, connection)
        age_tokens(flow_api.tenant, connection["id"])
        yield connection["id"], proxy


def test_the_new_refresh_token_survives_a_storage_outage_that_outlasts_the_lease(
    flow_api: InProcessApi,
    rotating: tuple[str, HoldingTokenProxy],
    aws: AwsFaultProxy,
    service_logs: LogCapture,
) -> None:
    connection_id, proxy = rotating
    before = load(flow_api.tenant, connection_id)
    seen = int(before.token_version)
    original = stored_tokens(flow_api.tenant, connection_id)

    def storage_goes_down(grant_type: str) -> None:
        if grant_type == "refresh_token":
            aws.take_down("dynamodb", OUTAGE_SECONDS)

    proxy.on_answer = storage_goes_down
    started = time.monotonic()
    answered = get_token(flow_api.tenant, connection_id, force_refresh=True)
    assert time.monotonic() - started < 25
    assert answered["access_token"] != original.access_token, answered
    assert aws.refused["dynamodb"] >= 2
    proxy.on_answer = None
    record = load(flow_api.tenant, connection_id)
    assert int(record.token_version) == seen
    assert record.recovered_after_version == seen
    assert any("refreshed tokens kept for recovery" in line for line in service_logs.lines)
    assert stored_tokens(flow_api.tenant, connection_id).refresh_token == original.refresh_token
    # The lease has run out; the next holder adopts the kept tokens without asking the provider...
    age_tokens(flow_api.tenant, connection_id)
    adopted = get_token(flow_api.tenant, connection_id, force_refresh=True)
    assert adopted["access_token"] == answered["access_token"]
    assert proxy.forwarded_count("refresh_token") == 1
    kept = stored_tokens(flow_api.tenant, connection_id)
    assert kept.refresh_token not in (None, original.refresh_token)
    # ...and the provider, which rotated the old refresh token away, accepts the kept one.
    age_tokens(flow_api.tenant, connection_id)
    again = get_token(flow_api.tenant, connection_id, force_refresh=True)
    assert "access_token" in again, again
    assert proxy.forwarded_count("refresh_token") == 2
    assert load(flow_api.tenant, connection_id).status == "connected"


# ------------------------------------------------------------------ unexpected errors in the holder


def test_an_unexpected_error_in_the_holder_releases_the_lease_and_backs_off(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint], aws: AwsFaultProxy
) -> None:
    """KMS refuses the client secret's key inside the holder (the tokens' key is cached).

    The secret is under a key of its own, as after an update of the secret, until the next token write.
    """
    connection_id, endpoint = scripted
    settings = get_settings()
    record = load(flow_api.tenant, connection_id)
    envelope = crypto.envelope_for(settings.encryption_key_arn)
    secret = (tokens.client_secret(settings, record) or "").encode()
    new_key = envelope.new_connection_key(flow_api.tenant, connection_id)
    resealed = envelope.seal(secret, tokens.secret_context(record), new_key)
    assert replace_client_secret(record, record.client_secret_ciphertext, resealed)
    crypto._connection_keys.clear()
    stored_tokens(flow_api.tenant, connection_id)  # a warm function: the tokens' key is cached
    aws.fail_with("kms", 30.0, 400, "DisabledException")
    result = get_token(flow_api.tenant, connection_id, force_refresh=True)
    assert result["error"]["code"] == "internal_error"
    assert endpoint.requests == []
    record = load(flow_api.tenant, connection_id)
    assert cast(object, record.lease_owner) is None
    assert record.consecutive_failures == 1
    assert record.status_reason == "refresh failed: KeyUnavailableError"
    assert record.next_attempt_at is not None and record.next_attempt_at > utcnow()
    assert get_token(flow_api.tenant, connection_id, force_refresh=True)["error"]["code"] == "provider_unavailable"


# ------------------------------------------------------------------ budget


def test_no_lease_is_taken_without_time_to_use_it(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint]
) -> None:
    connection_id, endpoint = scripted
    result = get_token(flow_api.tenant, connection_id, remaining_millis=2_000, force_refresh=True)
    assert result["error"]["code"] == "provider_unavailable"
    assert result["error"]["message"] == "no time left in this invocation to refresh"
    assert endpoint.requests == []
    assert cast(object, load(flow_api.tenant, connection_id).lease_owner) is None


# ------------------------------------------------------------------ delete


def test_a_refresh_during_delete_neither_conflicts_nor_leaves_a_live_token(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint]
) -> None:
    """While the provider revokes the grant, a refresh stores a new refresh token: it is revoked too."""
    connection_id, endpoint = scripted

    def concurrent_refresh() -> None:
        endpoint.answers.appendleft(rotated("access-concurrent", "refresh-concurrent"))
        assert get_token(flow_api.tenant, connection_id, force_refresh=True)["access_token"] == "access-concurrent"

    endpoint.queue(Scripted(200, "", on_answer=concurrent_refresh), Scripted(200, ""))
    response = flow_api.call("delete_connection", connection_id=connection_id)
    assert response.status == 204, response.text
    assert flow_api.call("get_connection", connection_id=connection_id).status == 404
    revoked = [r.form["token"] for r in endpoint.requests if r.path == "/revoke"]
    assert revoked == ["refresh-original", "refresh-concurrent"]


def test_a_kms_failure_during_revocation_is_reported_and_the_delete_completes(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint], aws: AwsFaultProxy, service_logs: LogCapture
) -> None:
    connection_id, endpoint = scripted
    aws.fail_with("kms", 30.0, 400, "DisabledException")
    response = flow_api.call("delete_connection", connection_id=connection_id)
    assert response.status == 204, response.text
    assert aws.refused["kms"] >= 1
    assert endpoint.requests == []  # nothing could be revoked without the tokens
    assert flow_api.call("get_connection", connection_id=connection_id).status == 404
    reported = [line for line in service_logs.lines if "revocation skipped" in line]
    assert len(reported) == 1
    assert '"kms_error_code":"DisabledException"' in reported[0]
    assert '"error_code":"key_unavailable"' in reported[0]


def test_delete_revokes_the_kept_refresh_token(
    flow_api: InProcessApi, scripted: tuple[str, ScriptedTokenEndpoint]
) -> None:
    """Tokens kept for the next holder hold the live refresh token: that is the one a delete revokes."""
    connection_id, endpoint = scripted
    answer = rotated("access-kept", "refresh-kept")
    answer.on_answer = lambda: expire_lease(flow_api.tenant, connection_id)
    endpoint.queue(answer, Scripted(200, ""))
    assert get_token(flow_api.tenant, connection_id, force_refresh=True)["access_token"] == "access-kept"
    assert load(flow_api.tenant, connection_id).recovered_after_version is not None
    assert flow_api.call("delete_connection", connection_id=connection_id).status == 204
    assert [r.form["token"] for r in endpoint.requests if r.path == "/revoke"] == ["refresh-kept"]
