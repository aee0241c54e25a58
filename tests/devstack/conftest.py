"""Fixtures of the devstack tests: a stack of the fixture template (tests/fixtures/devstack)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import Stack
from tests.support.stack_fixtures import ApiClient, api, stack  # noqa: F401 (fixtures for the project template)

FIXTURE_TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "devstack" / "template.yaml"
SCHEDULE_SPEEDUP = 30.0  # rate(1 minute) fires every two seconds


@pytest.fixture(scope="session")
def fixture_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        template_path=FIXTURE_TEMPLATE,
        state_dir=tmp_path_factory.mktemp("devstack-fixture"),
        env_overrides={"EXTRA_OVERRIDE": "from-caller"},
        schedules=True,
        schedule_speedup=SCHEDULE_SPEEDUP,
    ) as running:
        yield running


@pytest.fixture
def fixture_api(fixture_stack: Stack) -> ApiClient:
    return ApiClient(fixture_stack)
