"""GetTokenFunction on the local stack, through the local Lambda endpoint, when storage fails right after
the real provider rotated the refresh token.

The stack's functions reach the embedded AWS through a fault proxy; the proxy takes DynamoDB down the
moment the provider's answer passes the token forwarder, for longer than the refresh lease. The new
refresh token must survive: kept encrypted on the item, adopted by the next holder, and accepted by
the provider, which no longer accepts the old one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.aws_fault_proxy import AwsFaultProxy
from tests.support.provider import OidcProvider, standard_clients
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import (
    age_tokens,
    callback_url,
    connect,
    create_connection,
    get_token,
    new_tenant,
    stored_item,
)
from tests.support.token_proxy import HoldingTokenProxy

RETURN_URL = "http://127.0.0.1:5173/done"
LEASE_SECONDS = 5
# Longer than the lease and every store attempt in it (SDK retries included).
OUTAGE_SECONDS = 10.0


@pytest.fixture(scope="module")
def aws_proxy() -> Iterator[AwsFaultProxy]:
    with AwsFaultProxy() as running:  # pointed at the stack's embedded AWS below
        yield running


@pytest.fixture(scope="module")
def outage_stack(aws_proxy: AwsFaultProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=tmp_path_factory.mktemp("devstack-outage"),
        env_overrides={
            "AWS_ENDPOINT_URL": aws_proxy.url,
            "REFRESH_LEASE_SECONDS": str(LEASE_SECONDS),
            "OUTBOUND_TIMEOUT_SECONDS": "2",
        },
        schedules=False,
        with_provider=False,
    ) as running:
        aws_proxy.forward_to(running.aws_url)
        yield running


@pytest.fixture(scope="module")
def rotating_provider(outage_stack: Stack) -> Iterator[OidcProvider]:
    with OidcProvider(standard_clients(callback_url(outage_stack))) as running:
        yield running


def test_the_new_refresh_token_survives_a_storage_outage(
    outage_stack: Stack, aws_proxy: AwsFaultProxy, rotating_provider: OidcProvider
) -> None:
    tenant = new_tenant("outage")
    api = ApiClient(outage_stack).as_tenant(tenant)
    with HoldingTokenProxy(rotating_provider.token_endpoint) as forwarder:
        connection = create_connection(api, rotating_provider, token_url=forwarder.url)
        connection_id = connection["id"]
        connect(api, connection_id, RETURN_URL)
        before = stored_item(outage_stack, tenant, connection_id)
        first = get_token(outage_stack, tenant, connection_id)["access_token"]

        def storage_goes_down(grant_type: str) -> None:
            if grant_type == "refresh_token":
                aws_proxy.take_down("dynamodb", OUTAGE_SECONDS)

        forwarder.on_answer = storage_goes_down
        age_tokens(outage_stack, tenant, connection_id)
        answered = get_token(outage_stack, tenant, connection_id, force_refresh=True)
        forwarder.on_answer = None
        assert answered.get("access_token") not in (None, first), answered
        assert aws_proxy.refused["dynamodb"] >= 2
        kept = stored_item(outage_stack, tenant, connection_id)
        assert kept["token_version"] == before["token_version"]
        assert kept["recovered_after_version"] == before["token_version"]
        assert kept["tokens_ciphertext"] == before["tokens_ciphertext"]

        # The next holder adopts the kept tokens; the provider is not asked with a rotated-away token.
        age_tokens(outage_stack, tenant, connection_id)
        adopted = get_token(outage_stack, tenant, connection_id, force_refresh=True)
        assert adopted.get("access_token") == answered["access_token"], adopted
        assert forwarder.forwarded_count("refresh_token") == 1
        stored = stored_item(outage_stack, tenant, connection_id)
        assert int(stored["token_version"]["N"]) == int(before["token_version"]["N"]) + 1
        assert "recovered_tokens_ciphertext" not in stored

        # The provider rotated the old refresh token away; the kept one is the grant.
        age_tokens(outage_stack, tenant, connection_id)
        again = get_token(outage_stack, tenant, connection_id, force_refresh=True)
        assert again.get("access_token") not in (None, answered["access_token"]), again
        assert forwarder.forwarded_count("refresh_token") == 2
        assert stored_item(outage_stack, tenant, connection_id)["status"] == {"S": "connected"}
