"""RefreshWorkerFunction on the local stack, through the local Lambda endpoint, with too little time left.

Here a refresh may take 52 s (a 50 s provider deadline and the store) and the worker's Timeout is 60 s:
one message at a time (RefreshBatchConcurrency 1), after one slow refresh the worker has no time for
another, so it reports the rest of its batch back, by message id, untouched, for SQS to deliver again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import invoke, new_tenant, stored_item
from tests.support.token_endpoint import Scripted, ScriptedTokenEndpoint

PROVIDER_DELAY_SECONDS = 9.0
# Connected with a token that lives 2 s: due for refresh once half of it has passed.
SHORT_TOKEN = {"access_token": "service-token", "token_type": "bearer", "expires_in": 2}
TOKEN = {"access_token": "service-token-2", "token_type": "bearer", "expires_in": 3600}


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=tmp_path_factory.mktemp("devstack-budget"),
        env_overrides={
            "OUTBOUND_TIMEOUT_SECONDS": "50",
            "REFRESH_LEASE_SECONDS": "55",
            "REFRESH_BATCH_CONCURRENCY": "1",
        },
        schedules=False,
        with_provider=False,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ScriptedTokenEndpoint]:
    with ScriptedTokenEndpoint() as running:
        yield running


def connect_service_account(api: ApiClient, endpoint: ScriptedTokenEndpoint) -> str:
    """A client-credentials connection: connected at once, its short-lived token soon due for refresh."""
    body: dict[str, Any] = {
        "name": f"budget {time.time_ns()}",
        "grant_type": "client_credentials",
        "client_id": "service",
        "client_secret": "service-secret",
        "token_url": endpoint.url,
    }
    created = api.post("/connections", json=body)
    assert created.status_code == 201, created.text
    connection_id: str = created.json()["id"]
    endpoint.queue(Scripted(body=SHORT_TOKEN))
    connected = api.post(f"/connections/{connection_id}/authorize", json={})
    assert connected.status_code == 200 and connected.json()["status"] == "connected", connected.text
    return connection_id


def test_the_worker_reports_what_it_has_no_time_for(slow_stack: Stack, endpoint: ScriptedTokenEndpoint) -> None:
    tenant = new_tenant("budget")
    api = ApiClient(slow_stack).as_tenant(tenant)
    ids = [connect_service_account(api, endpoint) for _ in range(3)]
    versions = {i: stored_item(slow_stack, tenant, i)["token_version"] for i in ids}
    time.sleep(1.5)  # all three are due now
    endpoint.requests.clear()
    endpoint.default = Scripted(body=TOKEN, delay=PROVIDER_DELAY_SECONDS)
    records = [
        {
            "messageId": f"message-{n}",
            "receiptHandle": f"handle-{n}",
            "body": json.dumps({"tenant_id": tenant, "connection_id": connection_id}),
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:eu-central-1:123456789012:refresh",
            "awsRegion": "eu-central-1",
        }
        for n, connection_id in enumerate(ids)
    ]
    result = invoke(slow_stack.lambda_client(), {"Records": records}, "RefreshWorkerFunction")
    assert result.status == 200 and result.function_error is None, result
    assert result.payload == {"batchItemFailures": [{"itemIdentifier": "message-1"}, {"itemIdentifier": "message-2"}]}
    assert result.seconds < 30
    assert len(endpoint.requests) == 1
    assert stored_item(slow_stack, tenant, ids[0])["token_version"] != versions[ids[0]]
    for connection_id in ids[1:]:
        untouched = stored_item(slow_stack, tenant, connection_id)
        assert untouched["token_version"] == versions[connection_id]
        assert "lease_owner" not in untouched
