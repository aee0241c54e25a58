"""RefreshWorkerFunction on the local stack, through the local Lambda endpoint, with too little time left.

Here a refresh may take 52 s (a 50 s provider deadline and the store) and the worker's Timeout is 60 s:
one message at a time (RefreshBatchConcurrency 1), after one slow refresh the worker has no time for
another, so it reports the rest of its batch back, by message id, untouched, for SQS to deliver again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.refresh_worker import connect_service_account, slow_provider_once_due, token_versions
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import invoke, new_tenant, stored_item
from tests.support.token_endpoint import ScriptedTokenEndpoint

PROVIDER_DELAY_SECONDS = 9.0


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


def test_the_worker_reports_what_it_has_no_time_for(slow_stack: Stack, running_endpoint: ScriptedTokenEndpoint) -> None:
    tenant = new_tenant("budget")
    api = ApiClient(slow_stack).as_tenant(tenant)
    ids = [connect_service_account(api, running_endpoint, "budget") for _ in range(3)]
    versions = token_versions(slow_stack, tenant, ids)
    slow_provider_once_due(running_endpoint, PROVIDER_DELAY_SECONDS)
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
    assert len(running_endpoint.requests) == 1
    assert stored_item(slow_stack, tenant, ids[0])["token_version"] != versions[ids[0]]
    for connection_id in ids[1:]:
        untouched = stored_item(slow_stack, tenant, connection_id)
        assert untouched["token_version"] == versions[connection_id]
        assert "lease_owner" not in untouched
