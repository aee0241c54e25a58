"""RefreshWorkerFunction stops taking messages when its invocation has too little time left.

A refresh may take the provider's whole deadline plus the store; a message started later would end in
Lambda's own timeout, so the rest of the batch is reported back for redelivery, untouched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from oauth_connections.connections import refresh
from oauth_connections.core.config import get_settings
from oauth_connections.oauth import token_endpoint
from tests.conftest import InProcessApi, LambdaContext, load_handler
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint
from tests.unit.scheduled_helpers import body_of, emptied_queue, insert_connected, load, make_due

PROVIDER_DELAY_SECONDS = 1.5


@pytest.fixture
def endpoint(running_endpoint: ScriptedTokenEndpoint) -> Iterator[ScriptedTokenEndpoint]:
    running_endpoint.reset()
    running_endpoint.default = Scripted(
        200, {"access_token": "fresh", "token_type": "bearer", "expires_in": 3600}, delay=PROVIDER_DELAY_SECONDS
    )
    yield running_endpoint
    running_endpoint.default = Scripted(500, {"error": "server_error"})


def test_the_worker_defers_the_messages_it_has_no_time_for(
    flow_api: InProcessApi, endpoint: ScriptedTokenEndpoint, service_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One message at a time: after the first refresh, no time is left for the others."""
    monkeypatch.setenv("REFRESH_BATCH_CONCURRENCY", "1")
    get_settings.cache_clear()
    settings = get_settings()
    tenant = flow_api.tenant
    expiring = token_endpoint.TokenSet("old", "Bearer", "refresh-old", int(time.time()) + 60)
    ids = [insert_connected(tenant, endpoint.url, expiring, name=f"budget {i} {time.time_ns()}") for i in range(3)]
    for connection_id in ids:
        make_due(tenant, connection_id)
    queue = emptied_queue(service_env.refresh_queue_url)
    for connection_id in ids:
        queue.send(tenant, connection_id)
    batch = queue.receive_batch()
    assert sorted(body_of(m)[1] for m in batch) == sorted(ids)
    # Time for one refresh and a little more: the first message is processed, the others must wait.
    needed = refresh.holder_seconds_needed(settings)
    context = LambdaContext(int((needed + PROVIDER_DELAY_SECONDS / 2) * 1000))
    response = load_handler("refresh_worker")(queue.sqs_event(batch), context)
    deferred = [str(item["itemIdentifier"]) for item in response["batchItemFailures"]]
    assert deferred == [batch[1]["MessageId"], batch[2]["MessageId"]]
    assert len(endpoint.requests) == 1
    first = body_of(batch[0])[1]
    assert int(load(tenant, first).token_version) == 2
    for message in batch[1:]:
        untouched = load(tenant, body_of(message)[1])
        assert int(untouched.token_version) == 1
        assert cast(object, untouched.lease_owner) is None
        assert untouched.consecutive_failures == 0
    queue.clear()
