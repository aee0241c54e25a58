"""How long a token retrieval takes to fail when AWS does not answer.

The local stack runs with the template's own AWS call limits (not the local stack's laptop-sized ones);
its functions reach the embedded AWS through the fault proxy of the tests. A connection is made through
the real provider, GetTokenFunction is warmed, then each fault is applied around warm invocations
through the local Lambda endpoint: "paused" accepts connections and never answers, like a stopped
process.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.local_stack import connected_stack
from devstack.config import DEFAULT_TEMPLATE
from devstack.template import load_template
from tests.support.aws_fault_proxy import AwsFaultProxy, Mode
from tests.support.stack_flows import invoke

FAULTS: tuple[tuple[Mode, str], ...] = (
    ("hang", "paused (connections accepted, no answer)"),
    ("refuse", "gone (connections refused)"),
    ("slow", "slow (every answer 2 s late)"),
    ("throttle", "throttled (ThrottlingException)"),
)


def _template_limits() -> dict[str, Any]:
    parameters = load_template(DEFAULT_TEMPLATE)["Parameters"]
    return {name: parameters[name]["Default"] for name in ("AwsTimeoutSeconds", "AwsMaxAttempts")}


def measure(runs: int) -> list[tuple[str, str, str]]:
    limits = _template_limits()
    rows = []
    with (
        AwsFaultProxy() as proxy,
        connected_stack(
            parameter_overrides=limits,
            env_overrides={"AWS_ENDPOINT_URL": proxy.url},
            on_start=lambda stack: proxy.forward_to(stack.aws_url),
        ) as connected,
    ):
        client = connected.stack.lambda_client()
        for mode, label in FAULTS:
            samples = []
            for _ in range(runs):
                connected.warm()  # and AWS answers again
                with proxy.fault(mode):
                    result = invoke(client, connected.payload)
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
