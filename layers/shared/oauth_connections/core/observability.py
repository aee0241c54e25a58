"""Logger, tracer and metrics of the service (Powertools), configured from POWERTOOLS_* variables."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer


class _ThreadSafeMetrics(Metrics):
    """Metrics added from the refresh worker's threads: Powertools' metric set is a plain dict."""

    _lock = threading.Lock()

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            super().add_metric(*args, **kwargs)


logger = Logger()
# X-Ray subsegments for every AWS call (botocore) from import on. Not Powertools' default of every library
# the X-Ray SDK knows: that imports requests at every cold start, and pynamodb's patch traces each DynamoDB
# call a second time (our models call DynamoDB through a botocore client) and parses its response again.
tracer = Tracer(patch_modules=("botocore",))
metrics = _ThreadSafeMetrics()


@cache
def trace_http() -> None:
    """Traces the requests library's calls (token endpoints, feeds, the API calls) from now on. Called where
    a session is made, so that a function that makes none, a token retrieval, never imports requests."""
    tracer.patch(("requests",))
