"""How long a token retrieval takes to fail when AWS does not answer.

The local stack runs with the template's own AWS call limits (not the local stack's laptop-sized ones);
its functions reach the embedded AWS through the fault proxy of the tests. A connection is made through
the real provider, GetTokenFunction is warmed, then each fault is applied around warm invocations
through the local Lambda endpoint: "paused" accepts connections and never answers, like a stopped
process.
"""

from __future__ import annotations

import statistics
import tempfile
from typing import Any

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from devstack.template import load_template
from tests.support.aws_fault_proxy import AwsFaultProxy, Mode
from tests.support.provider import OidcProvider, standard_clients
from tests.support.stack_fixtures import ApiClient
from tests.support.stack_flows import callback_url, connect, create_connection, get_token, invoke, new_tenant

FAULTS: tuple[tuple[Mode, str], ...] = (
    ("hang", "paused (connections accepted, no answer)"),
    ("refuse", "gone (connections refused)"),
    ("slow", "slow (every answer 2 s late)"),
    ("throttle", "throttled (ThrottlingException)"),
)
RETURN_URL = "http://127.0.0.1:5173/done"


def _template_limits() -> dict[str, Any]:
    parameters = load_template(DEFAULT_TEMPLATE)["Parameters"]
    return {name: parameters[name]["Default"] for name in ("AwsTimeoutSeconds", "AwsMaxAttempts")}


def measure(runs: int) -> list[tuple[str, str, str]]:
    limits = _template_limits()
    rows = []
    with (
        tempfile.TemporaryDirectory() as state_dir,
        AwsFaultProxy() as proxy,
        Stack(
            template_path=DEFAULT_TEMPLATE,
            repo_root=REPO_ROOT,
            state_dir=state_dir,
            parameter_overrides=limits,
            env_overrides={"AWS_ENDPOINT_URL": proxy.url},
            echo_logs=False,
        ) as stack,
    ):
        proxy.forward_to(stack.aws_url)
        with OidcProvider(standard_clients([callback_url(stack)])) as provider:
            tenant = new_tenant("bench")
            api = ApiClient(stack).as_tenant(tenant)
            connection_id = create_connection(api, provider)["id"]
            connect(api, connection_id, RETURN_URL)
            payload = {"tenant_id": tenant, "connection_id": connection_id}
            client = stack.lambda_client()
            for mode, label in FAULTS:
                samples = []
                for _ in range(runs):
                    get_token(stack, tenant, connection_id)  # warm, and AWS answers again
                    with proxy.fault(mode):
                        result = invoke(client, payload)
                    assert result.function_error is None, result
                    assert result.payload["error"]["code"] == "service_unavailable", result
                    samples.append(result.seconds)
                rows.append(
                    (
                        f"GetToken answer with AWS {label}",
                        f"{statistics.median(samples):.2f} s (max {max(samples):.2f} s)",
                        f"service_unavailable; {runs} warm invocations, AwsTimeoutSeconds={limits['AwsTimeoutSeconds']}, "
                        f"AwsMaxAttempts={limits['AwsMaxAttempts']}; target under 3 s",
                    )
                )
    return rows
