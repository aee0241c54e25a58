"""Event publication after a stored change: retried when EventBridge refuses the entry, then logged and
counted (the EventsNotPublished metric, alarmed in template.yaml), never raised to the caller."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oauth_connections.core import events
from tests.conftest import LogCapture, Resources
from tests.support.aws_calls import count_aws_calls


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_an_accepted_event_is_sent_once(service_env: Resources, service_logs: LogCapture) -> None:
    with count_aws_calls() as calls:
        events.publish("default", "connection.connected", tenant_id="acme", connection_id="con_1", status="connected")
    assert calls["events.PutEvents"] == 1
    assert "event not published" not in service_logs.text


def test_a_refused_publication_is_retried_then_logged_and_counted(
    service_env: Resources, service_logs: LogCapture, capsys: pytest.CaptureFixture[str]
) -> None:
    with count_aws_calls() as calls:  # the bus does not exist: EventBridge refuses every attempt
        events.publish("no-such-bus", "connection.connected", tenant_id="acme", connection_id="con_1", status="x")
    assert calls["events.PutEvents"] == events.PUBLISH_ATTEMPTS
    [failure] = [line for line in _json_lines(service_logs.text) if line.get("message") == "event not published"]
    assert failure["level"] == "ERROR"
    assert failure["detail_type"] == "connection.connected" and failure["connection_id"] == "con_1"
    assert failure["problem"] == "ResourceNotFoundException"
    [metric] = [line for line in _json_lines(capsys.readouterr().out) if events.NOT_PUBLISHED_METRIC in line]
    assert metric[events.NOT_PUBLISHED_METRIC] == [1.0]
    assert metric["detail_type"] == "connection.connected"
