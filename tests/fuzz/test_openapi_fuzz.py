"""Property-based fuzzing of every documented operation through the local API, from /openapi.json.

Each generated request goes through the local API Gateway to the real functions on the embedded AWS,
with a valid tenant token. Every response must be a non-5xx that conforms to the documented schema
(status code, content type, body), and every error the documented error shape. Schema-valid input
may still be refused (a URL must be https to a public host, which no JSON schema can say), so the
check that all schema-valid data is accepted is left out; every other check applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT

EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="session")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=Path(tmp_path_factory.mktemp("fuzz-stack")),
        schedules=False,
        echo_logs=False,
    ) as running:
        yield running


@pytest.fixture(scope="session")
def bearer(fuzz_stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {fuzz_stack.mint_token('fuzz-tenant', expires_in=7200)}"}


@pytest.fixture(scope="session")
def api_schema(fuzz_stack: Stack, bearer: dict[str, str]) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_stack.api_url}/openapi.json", headers=bearer)


def test_every_operation_conforms(api_schema: Any, fuzz_stack: Stack, bearer: dict[str, str]) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14  # every documented route is fuzzed
    for operation in operations:
        fuzz(operation, fuzz_stack.api_url, bearer)


def fuzz(operation: Any, base_url: str, bearer: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call_and_validate(
            base_url=base_url, headers=bearer, timeout=60, excluded_checks=[checks.positive_data_acceptance]
        )
        assert response.status_code < 500
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"}
            assert body["error"]["code"]
            assert body["error"]["message"]

    check()
