"""Logger, tracer and metrics of the service (Powertools), configured from POWERTOOLS_* variables."""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer


class _ThreadSafeMetrics(Metrics):
    """Metrics added from the refresh worker's threads: Powertools' metric set is a plain dict."""

    _lock = threading.Lock()

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            super().add_metric(*args, **kwargs)


logger = Logger()
tracer = Tracer()
metrics = _ThreadSafeMetrics()
