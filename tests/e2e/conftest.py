"""Fixtures of the browser tests: the project's template on the local stack, the real provider, and a
loopback frontend page for the browser to return to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack import Stack
from tests.support.provider import OidcProvider, standard_clients
from tests.support.return_page import ReturnPage
from tests.support.stack_fixtures import ApiClient, api, stack  # noqa: F401 (fixtures)
from tests.support.stack_flows import callback_url


@pytest.fixture(scope="session")
def provider(stack: Stack) -> Iterator[OidcProvider]:  # noqa: F811 (the imported fixture, requested)
    with OidcProvider(standard_clients(callback_url(stack))) as running:
        yield running


@pytest.fixture
def return_page() -> Iterator[ReturnPage]:
    with ReturnPage("/done") as running:
        yield running
