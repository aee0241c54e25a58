"""The time the current invocation has left, read from the Lambda context once per invocation.

Every outbound call (a provider, or AWS itself) and every lease is sized from this, so no call outlives
the function that makes it: a caller that runs out of time answers an error instead of being killed by
Lambda's own timeout. Outside an invocation (a unit test calling inner code) there is no deadline.

The deadline lives in a context variable: threads started during an invocation see no deadline unless
they run in a copy of the context (`contextvars.copy_context().run`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Protocol


class _HasRemainingTime(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


_deadline: ContextVar[float | None] = ContextVar("invocation_deadline", default=None)


def start_invocation(context: object) -> Token[float | None]:
    """Remember when this invocation must have answered (a monotonic clock reading), if the context says."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    millis = remaining() if callable(remaining) else None
    return _deadline.set(time.monotonic() + millis / 1000 if isinstance(millis, int | float) else None)


@contextmanager
def invocation(context: object) -> Iterator[None]:
    """The deadline of one invocation while its handler runs, and no longer (a warm thread serves the next)."""
    token = start_invocation(context)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining_seconds() -> float | None:
    """Seconds left before the invocation's deadline, or None outside an invocation."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def bounded(seconds: float, *, reserve: float = 0.0) -> float:
    """`seconds`, shortened so that it ends `reserve` seconds before the invocation's deadline (never below 0)."""
    left = remaining_seconds()
    if left is None:
        return seconds
    return max(0.0, min(seconds, left - reserve))
