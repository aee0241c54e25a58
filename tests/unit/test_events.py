"""Event publication after a stored change: retried when EventBridge refuses the entry, then logged and
counted (the EventsNotPublished metric, alarmed in template.yaml), never raised to the caller."""

from __future__ import annotations

import json
import re
from pathlib import Path
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


PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "shared" / "oauth_connections"
# A publication names its detail-type right after the bus; _announce (connections/service.py) publishes
# the kind it records.
PUBLISHED = re.compile(r'(?:events\.publish\(\s*[\w.]+,|_announce\([^)]*?)\s*"([a-z_]+\.[a-z_]+)"')
DOCUMENTED = re.compile(r"^\| `([a-z_]+\.[a-z_]+)` \|", re.MULTILINE)


def test_every_published_event_is_documented_with_the_others() -> None:
    published = {kind for path in PACKAGE.rglob("*.py") for kind in PUBLISHED.findall(path.read_text())}
    events_section = (PACKAGE.parents[2] / "README.md").read_text().split("\n## Events\n", 1)[1].split("\n## ")[0]
    assert {"connection.created", "connection.updated", "connection.deleted", "connection.recovered"} <= published
    assert published == set(DOCUMENTED.findall(events_section))
