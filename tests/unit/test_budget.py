"""The invocation deadline: read from the Lambda context, absent outside an invocation."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import pytest

from oauth_connections.core import budget


class _Context:
    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


def _in_fresh_context(function: Callable[..., Any], *args: Any) -> Any:
    return contextvars.Context().run(function, *args)


def test_no_deadline_outside_an_invocation() -> None:
    assert _in_fresh_context(budget.remaining_seconds) is None
    assert _in_fresh_context(budget.bounded, 8.0) == 8.0


def test_deadline_comes_from_the_lambda_context() -> None:
    def run() -> tuple[float | None, float, float]:
        budget.start_invocation(_Context(5_000))
        return budget.remaining_seconds(), budget.bounded(8.0, reserve=1.0), budget.bounded(2.0)

    left, capped, short = _in_fresh_context(run)
    assert left is not None
    assert 4.5 < left <= 5.0
    assert 3.5 < capped <= 4.0
    assert short == 2.0


def test_an_exhausted_budget_is_zero_not_negative() -> None:
    def run() -> float:
        budget.start_invocation(_Context(100))
        return budget.bounded(8.0, reserve=1.0)

    assert _in_fresh_context(run) == 0.0


@pytest.mark.parametrize("context", [object(), None])
def test_a_context_without_remaining_time_sets_no_deadline(context: object) -> None:
    def run() -> float | None:
        budget.start_invocation(context)
        return budget.remaining_seconds()

    assert _in_fresh_context(run) is None
