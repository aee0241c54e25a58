"""Binds every item model to the table at run time, with the AWS call limits of the moment."""

from __future__ import annotations

import threading
from typing import Any

from oauth_connections.core import aws
from oauth_connections.storage.activity import ActivityRecord
from oauth_connections.storage.connections import ConnectionNameRecord, ConnectionRecord
from oauth_connections.storage.feeds import FeedRecord, FeedRunRecord
from oauth_connections.storage.flows import FlowRecord
from oauth_connections.storage.table import TableModel, _Binding

MODELS: tuple[type[TableModel], ...] = (
    ConnectionRecord,
    ConnectionNameRecord,
    FlowRecord,
    FeedRecord,
    FeedRunRecord,
    ActivityRecord,
)


def bind_table(table_name: str) -> None:
    """Point every model at the table, with the timeouts and attempts of core/aws.py; cheap when unchanged
    (called on each request path, so a call made near the invocation's deadline gets shorter timeouts)."""
    limits = aws.current_limits()
    with _lock:  # the refresh worker's threads bind too
        _bind(table_name, limits)


_lock = threading.Lock()


def _bind(table_name: str, limits: aws.CallLimits) -> None:
    if _Binding.table_name == table_name and _Binding.limits == limits:
        return
    for model in MODELS:
        meta: Any = model.Meta  # pynamodb adds the connection settings to Meta at class creation
        meta.table_name = table_name
        meta.connect_timeout_seconds = limits.connect_timeout
        meta.read_timeout_seconds = limits.read_timeout
        meta.max_retry_attempts = limits.max_attempts - 1  # pynamodb counts retries, not attempts
        connection = _Binding.connections.get((model, table_name, limits))
        if connection is None:
            model._connection = None
            connection = _Binding.connections[(model, table_name, limits)] = model._get_connection()
            aws.share_sdk_models(connection.connection.session)
        model._connection = connection
    _Binding.table_name, _Binding.limits = table_name, limits
