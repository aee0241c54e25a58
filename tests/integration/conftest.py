"""Fixtures of the integration tests: the project's template on the local stack, and the real provider.

``stack`` and ``api`` (tests/support/stack_fixtures.py) replace the in-process ``api`` of tests/conftest.py
here: every request goes over HTTP to the local API gateway, every token retrieval through the local
Lambda Invoke API.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack import Stack
from devstack.config import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.provider import OidcProvider, standard_clients
from tests.support.stack_fixtures import ApiClient, api, stack  # noqa: F401 (fixtures)
from tests.support.stack_flows import callback_url

# The smallest lease the service accepts: a dead holder's lease runs out within a test.
SHORT_LEASE_SECONDS = 5


@pytest.fixture(scope="session")
def lease_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second stack of the same template whose refresh lease lasts SHORT_LEASE_SECONDS instead of 30.

    Kept apart from ``stack`` on purpose: there a refresh holder that gets little CPU while 50 cold
    starts compete with it must never see its lease expire under it.
    """
    with Stack(
        template_path=DEFAULT_TEMPLATE,
        repo_root=REPO_ROOT,
        state_dir=tmp_path_factory.mktemp("devstack-lease"),
        env_overrides={"REFRESH_LEASE_SECONDS": str(SHORT_LEASE_SECONDS)},
        schedules=False,
        with_provider=False,
    ) as running:
        yield running


@pytest.fixture(scope="session")
def provider(stack: Stack, lease_stack: Stack) -> Iterator[OidcProvider]:  # noqa: F811 (the imported fixture)
    """The real authorization server; every client accepts the callbacks of both stacks."""
    with OidcProvider(standard_clients([callback_url(stack), callback_url(lease_stack)])) as running:
        yield running


@pytest.fixture
def lease_api(lease_stack: Stack) -> ApiClient:
    return ApiClient(lease_stack)
