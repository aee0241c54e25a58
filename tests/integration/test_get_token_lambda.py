"""GetTokenFunction through the local Lambda Invoke API: the contract, and the single-flight refresh under
real concurrency (separate worker processes) against the real provider with refresh-token rotation."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack import Stack
from tests.support.processes import environment_of, pid_holding_tcp_connection
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import (
    GET_TOKEN,
    Invocation,
    age_tokens,
    connect,
    create_connection,
    get_token,
    invoke,
    new_tenant,
    refreshes,
    stored_datetime,
    stored_item,
)
from tests.support.token_proxy import HoldingTokenProxy

RETURN_URL = "http://127.0.0.1:5173/done"
CALLERS = 50
# Refresh answers are held back this long, so the 50 callers overlap with the one refresh.
REFRESH_DELAY_MS = 1500


@dataclass(frozen=True)
class Connected:
    stack: Stack
    tenant: str
    connection_id: str
    api: ApiClient

    def payload(self, **fields: Any) -> dict[str, Any]:
        return {"tenant_id": self.tenant, "connection_id": self.connection_id} | fields


def connect_new(api: ApiClient, provider: OidcProvider, **extra: Any) -> Connected:
    tenant = new_tenant("token")
    client = api.as_tenant(tenant)
    connection = create_connection(client, provider, **extra)
    connect(client, connection["id"], RETURN_URL)
    return Connected(api.stack, tenant, connection["id"], client)


@pytest.fixture
def connected(api: ApiClient, provider: OidcProvider) -> Connected:
    return connect_new(api, provider)


def active(provider: OidcProvider, token: str) -> bool:
    return provider.introspect(token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True


def grants_revoked(provider: OidcProvider) -> int:
    return int(provider.stats()["grants_revoked"])


def concurrently(stack: Stack, payloads: list[dict[str, Any]]) -> list[Invocation]:
    """Invoke GetTokenFunction once per payload, all released at the same moment from their own threads."""
    client = stack.lambda_client()  # thread-safe; its pool holds 64 connections
    barrier = threading.Barrier(len(payloads), timeout=30)

    def call(payload: dict[str, Any]) -> Invocation:
        barrier.wait()
        return invoke(client, payload)

    with ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(call, payloads))


# ------------------------------------------------------------------ the contract


def test_returns_a_valid_access_token(connected: Connected, provider: OidcProvider) -> None:
    stack = connected.stack
    before = refreshes(provider)
    spec = stack.functions[GET_TOKEN]
    client = stack.lambda_client()
    answers = [invoke(client, connected.payload(), function=name) for name in (GET_TOKEN, spec.name, spec.arn)]
    for answer in answers:
        assert answer.status == 200 and answer.function_error is None, answer
    token = answers[0].payload
    assert {"access_token", "token_type", "expires_at", "scopes"} <= set(token)
    assert token["token_type"] == "Bearer"
    assert set(token["scopes"]) == {"api.read", "api.write"}
    assert datetime.fromisoformat(token["expires_at"]) > datetime.now(UTC)
    assert all(answer.payload == token for answer in answers)  # warm retrievals: the stored token
    assert refreshes(provider) == before
    assert active(provider, token["access_token"])


MALFORMED: list[Any] = [
    {},
    {"tenant_id": "acme"},
    {"connection_id": "con_x"},
    {"tenant_id": 5, "connection_id": "con_x"},
    {"tenant_id": "a b", "connection_id": "con_x"},
    {"tenant_id": "acme", "connection_id": "con_x", "force_refresh": "yes"},
    {"tenant_id": "acme", "connection_id": "con_x", "min_valid_seconds": -1},
    {"tenant_id": "acme", "connection_id": "con_x", "unexpected": 1},
    [],
    "a string",
    None,
]


@pytest.mark.parametrize("payload", MALFORMED)
def test_malformed_payload_is_invalid_request(stack: Stack, payload: Any) -> None:
    answer = invoke(stack.lambda_client(), payload)
    assert answer.status == 200
    assert answer.function_error is None, answer  # a contract answer, not a crash
    assert answer.payload["error"]["code"] == "invalid_request"
    assert answer.payload["error"]["message"]
    assert "Traceback" not in str(answer.payload)


def test_other_tenants_and_unknown_connections_are_not_found(
    connected: Connected, api: ApiClient, provider: OidcProvider
) -> None:
    stack = connected.stack
    assert get_token(stack, new_tenant("intruder"), connected.connection_id)["error"]["code"] == "not_found"
    assert get_token(stack, connected.tenant, "con_" + "0" * 26)["error"]["code"] == "not_found"
    assert get_token(stack, connected.tenant, "../../etc/passwd")["error"]["code"] == "not_found"
    pending = create_connection(connected.api, provider)
    assert get_token(stack, connected.tenant, pending["id"])["error"]["code"] == "not_connected"
    # Another tenant's connection id, asked for as this tenant, is not found either.
    other = api.as_tenant(new_tenant("other"))
    theirs = create_connection(other, provider)
    assert get_token(stack, connected.tenant, theirs["id"])["error"]["code"] == "not_found"


# ------------------------------------------------------------------ single-flight refresh


def test_fifty_concurrent_forced_refreshes_reach_the_provider_once(
    connected: Connected, provider: OidcProvider
) -> None:
    stack = connected.stack
    before, revoked = refreshes(provider), grants_revoked(provider)
    original = get_token(stack, connected.tenant, connected.connection_id)["access_token"]
    # 50 warm execution environments first: 50 simultaneous cold starts take ~10 s on two cores, far
    # longer than the refresh, so most callers would arrive after it instead of racing it. (50
    # concurrent plain retrievals are a check of their own: all get the stored token, nobody refreshes.)
    warm_up = concurrently(stack, [connected.payload()] * CALLERS)
    assert {a.payload.get("access_token") for a in warm_up} == {original}, warm_up
    assert refreshes(provider) == before

    # force_refresh has a debounce (FORCE_REFRESH_MIN_INTERVAL_SECONDS, 30 s by default): tokens younger
    # than that are returned as they are, because many consumers report the same 401 at once. We keep
    # the debounce and age the tokens instead of turning it off, so the scenario holds whatever the
    # timing: a caller that reads the item while the one refresh is in flight waits for the lease
    # holder's result; a caller whose invocation starts after the new tokens are stored gets them as
    # "just refreshed". With the debounce at 0 such a late caller would rightly refresh a second time,
    # and "exactly one refresh" would depend on all 50 invocations reading before the holder's write.
    age_tokens(stack, connected.tenant, connected.connection_id)
    provider.set_token_endpoint_delay(REFRESH_DELAY_MS)
    try:
        answers = concurrently(stack, [connected.payload(force_refresh=True)] * CALLERS)
    finally:
        provider.set_token_endpoint_delay(0)

    assert refreshes(provider) == before + 1
    assert all(a.status == 200 and a.function_error is None and "access_token" in a.payload for a in answers), [
        a for a in answers if a.function_error or "access_token" not in (a.payload or {})
    ]
    tokens = {a.payload["access_token"] for a in answers}
    assert len(tokens) == 1, f"{len(tokens)} different tokens"
    token = tokens.pop()
    assert token != original
    assert active(provider, token)
    assert grants_revoked(provider) == revoked  # no refresh token was used twice
    # The race was real: (nearly) every caller was in flight while the provider held back the one
    # refresh's answer (a warm retrieval takes milliseconds), so they waited on the lease for the
    # holder's result. A few may have had a cold start and come late: the debounce serves them.
    waited = sum(1 for a in answers if a.seconds >= REFRESH_DELAY_MS / 1000)
    assert waited >= CALLERS * 4 // 5, sorted(round(a.seconds, 2) for a in answers)

    # Afterwards the connection refreshes again, normally: the rotated refresh token works.
    age_tokens(stack, connected.tenant, connected.connection_id)
    again = get_token(stack, connected.tenant, connected.connection_id, force_refresh=True)
    assert refreshes(provider) == before + 2
    assert again.get("access_token") not in (None, token), again
    assert active(provider, again["access_token"])
    assert grants_revoked(provider) == revoked


@pytest.fixture
def token_proxy(provider: OidcProvider) -> Iterator[HoldingTokenProxy]:
    with HoldingTokenProxy(provider.token_endpoint) as running:
        yield running


def test_lease_holder_killed_mid_refresh_is_taken_over(
    lease_api: ApiClient, lease_stack: Stack, provider: OidcProvider, token_proxy: HoldingTokenProxy
) -> None:
    """The holder dies after taking the lease and BEFORE the provider saw its refresh request.

    A holder that dies after the provider has processed its request has burnt the old refresh token:
    with rotation that is inherent (the new one died with the holder) and not what this is about. The
    proxy in front of the provider makes the timing deterministic: it holds the holder's request, the
    test kills the holder's worker process, and the proxy drops the request without forwarding it.
    """
    stack = lease_stack
    connected = connect_new(lease_api, provider, token_url=token_proxy.url)
    original = get_token(stack, connected.tenant, connected.connection_id)["access_token"]
    age_tokens(stack, connected.tenant, connected.connection_id)
    before, revoked = refreshes(provider), grants_revoked(provider)

    token_proxy.hold_refreshes = True
    with ThreadPoolExecutor(1) as background:
        doomed = background.submit(invoke, stack.lambda_client(), connected.payload(force_refresh=True))
        held = token_proxy.wait_for_held(timeout=20)
        # A refresh request only leaves a lease holder: the item shows the live lease.
        item = stored_item(stack, connected.tenant, connected.connection_id)
        lease_expires_at = stored_datetime(item, "lease_expires_at")
        assert item.get("lease_owner", {}).get("S") and lease_expires_at is not None, item.keys()
        assert lease_expires_at > datetime.now(UTC)
        holder = pid_holding_tcp_connection(held.client_port, token_proxy.port, stack.child_pids())
        assert holder is not None, "no worker of the stack holds the connection to the proxy"
        assert environment_of(holder)["AWS_LAMBDA_FUNCTION_NAME"] == stack.functions[GET_TOKEN].name
        os.kill(holder, signal.SIGKILL)
        died = doomed.result(timeout=20)
    assert died.function_error == "Unhandled" and died.payload["errorType"] == "Runtime.ExitError", died
    token_proxy.drop(held)
    token_proxy.hold_refreshes = False
    assert refreshes(provider) == before  # the provider never saw the dead holder's request
    assert stored_item(stack, connected.tenant, connected.connection_id)["lease_owner"]  # the lease outlives it

    answers = concurrently(stack, [connected.payload(force_refresh=True)] * 6)
    assert all(a.function_error is None and "access_token" in a.payload for a in answers), answers
    assert refreshes(provider) == before + 1
    assert token_proxy.forwarded_count("refresh_token") == 1
    tokens = {a.payload["access_token"] for a in answers}
    assert len(tokens) == 1, tokens
    token = tokens.pop()
    assert token != original
    assert active(provider, token)
    assert grants_revoked(provider) == revoked
    item = stored_item(stack, connected.tenant, connected.connection_id)
    assert "lease_owner" not in item and "lease_expires_at" not in item
    refreshed_at = stored_datetime(item, "refreshed_at")
    assert refreshed_at is not None and refreshed_at >= lease_expires_at  # taken over only once the lease ran out

    # The grant is intact: the connection keeps refreshing.
    age_tokens(stack, connected.tenant, connected.connection_id)
    again = get_token(stack, connected.tenant, connected.connection_id, force_refresh=True)
    assert refreshes(provider) == before + 2
    assert token_proxy.forwarded_count("refresh_token") == 2
    assert active(provider, again["access_token"]) and again["access_token"] != token
    assert grants_revoked(provider) == revoked
