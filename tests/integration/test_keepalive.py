"""The local stack's schedule and queue keep a connection alive with no user action.

The provider's access tokens live 12 s; the stack's schedules run 60 times faster (the refresh sweep,
rate(1 minute) on the local stack, fires every second), so within a minute the connection goes through
several token lifetimes. Nobody calls the service in between: the sweep queues it, the queue delivers
it to RefreshWorkerFunction, the worker refreshes it. Every stored token is valid when stored, the
grant stays active, and the newest token works at the provider.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.provider import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcProvider, standard_clients
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import callback_url, connect, create_connection, new_tenant, stored_item

TOKEN_SECONDS = 12


@pytest.fixture(scope="module")
def scheduled_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=Path(tmp_path_factory.mktemp("devstack-scheduled")),
        schedules=True,
        schedule_speedup=60.0,
        echo_logs=False,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def short_token_provider(scheduled_stack: Stack) -> Iterator[OidcProvider]:
    with OidcProvider(standard_clients(callback_url(scheduled_stack)), access_token_ttl=TOKEN_SECONDS) as running:
        yield running


def test_connection_stays_alive_across_several_token_lifetimes(
    scheduled_stack: Stack, short_token_provider: OidcProvider
) -> None:
    api = ApiClient(scheduled_stack).as_tenant(new_tenant("alive"))
    connection = create_connection(api, short_token_provider)
    connect(api, connection["id"], "http://127.0.0.1:8000/done")
    item = stored_item(scheduled_stack, _tenant_of(api), connection["id"])
    first_version = int(item["token_version"]["N"])

    deadline = time.monotonic() + TOKEN_SECONDS * 3 + 15
    versions = {first_version}
    while time.monotonic() < deadline and len(versions) < 4:
        time.sleep(1)
        versions.add(int(stored_item(scheduled_stack, _tenant_of(api), connection["id"])["token_version"]["N"]))
    assert len(versions) >= 4, f"only {sorted(versions)} after {TOKEN_SECONDS * 3 + 15} s"

    view = api.get(f"/connections/{connection['id']}").json()
    assert view["status"] == "connected"
    logs = "\n".join(scheduled_stack.function_logs("RefreshWorkerFunction"))
    assert '"outcome": "refreshed"' in logs or '"outcome":"refreshed"' in logs
    assert short_token_provider.stats()["grants_revoked"] == 0
    token = _token(scheduled_stack, api, connection["id"])
    assert short_token_provider.introspect(token, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)["active"] is True


def _tenant_of(api: ApiClient) -> str:
    import jwt

    return str(jwt.decode(api.token or "", options={"verify_signature": False})["tenant_id"])


def _token(stack: Stack, api: ApiClient, connection_id: str) -> str:
    from tests.support.stack_flows import get_token

    answer = get_token(stack, _tenant_of(api), connection_id)
    return str(answer["access_token"])
