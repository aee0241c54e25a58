"""Schedules, SQS event sources and the capture of published EventBridge events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from devstack import Stack
from devstack.triggers import Cron


def _eventually[T](probe: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


def test_rate_schedule_fires_with_speedup(fixture_stack: Stack) -> None:
    # rate(1 minute) at speed-up 30: a firing every two seconds.
    def ticks() -> list[dict[str, Any]]:
        lines = fixture_stack.function_logs("TickFunction")
        return [json.loads(line)["tick"] for line in lines if line.startswith('{"tick"')]

    events = _eventually(lambda: ticks() if len(ticks()) >= 2 else None, timeout=10)
    event = events[0]
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["detail"] == {}
    assert event["resources"][0].startswith("arn:aws:events:eu-central-1:123456789012:rule/")
    assert fixture_stack.schedule_firings()[("TickFunction", "Tick")] >= 2


def test_fire_schedule_on_demand(fixture_stack: Stack) -> None:
    result = fixture_stack.fire_schedule("TickFunction", "Nightly")
    assert result == {"source": "aws.scheduler", "detail_type": "Scheduled Event"}


def test_cron_next_firing() -> None:
    from datetime import UTC, datetime

    start = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)  # a Wednesday
    assert Cron("0 3 * * ? *").next_after(start) == datetime(2025, 1, 2, 3, 0, tzinfo=UTC)
    assert Cron("*/15 * * * ? *").next_after(start) == datetime(2025, 1, 1, 12, 15, tzinfo=UTC)
    assert Cron("0 9 ? * MON-FRI *").next_after(datetime(2025, 1, 3, 10, 0, tzinfo=UTC)) == datetime(
        2025, 1, 6, 9, 0, tzinfo=UTC
    )
    assert Cron("0 0 L * ? *").next_after(start) == datetime(2025, 1, 31, 0, 0, tzinfo=UTC)
    assert Cron("0 8 ? * 2#1 *").next_after(start) == datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


def test_sqs_partial_batch_failure_ends_in_the_dlq(fixture_stack: Stack) -> None:
    sqs = fixture_stack.boto3_client("sqs")
    work, dead = fixture_stack.physical_ids["WorkQueue"], fixture_stack.physical_ids["DeadLetterQueue"]
    tag = str(time.time_ns())
    for body in (f"ok-a-{tag}", f"fail-{tag}", f"ok-b-{tag}"):
        sqs.send_message(QueueUrl=work, MessageBody=body)

    def dead_letters() -> list[str]:
        messages = sqs.receive_message(QueueUrl=dead, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return [message["Body"] for message in messages.get("Messages", [])]

    assert _eventually(dead_letters, timeout=20) == [f"fail-{tag}"]
    consumed = [
        json.loads(line)
        for line in fixture_stack.function_logs("ConsumerFunction")
        if line.startswith('{"consumed"') and tag in line
    ]
    counts: dict[str, list[str]] = {}
    for entry in consumed:
        counts.setdefault(entry["consumed"], []).append(entry["receive_count"])
    assert counts[f"ok-a-{tag}"] == ["1"]  # succeeded messages are deleted, never redelivered
    assert counts[f"ok-b-{tag}"] == ["1"]
    assert counts[f"fail-{tag}"] == ["1", "2"]  # maxReceiveCount 2, then the redrive policy moves it
    attributes = sqs.get_queue_attributes(QueueUrl=work, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_published_events_are_captured(fixture_stack: Stack) -> None:
    tag = str(time.time_ns())
    assert fixture_stack.invoke("PublishFunction", {"tag": tag}) == {"failed": 0}
    fixture_stack.boto3_client("events").put_events(
        Entries=[{"Source": "test.default-bus", "DetailType": "FromTest", "Detail": json.dumps({"tag": tag})}]
    )

    def mine() -> list[dict[str, Any]]:
        return [event for event in fixture_stack.published_events() if event.get("detail", {}).get("tag") == tag]

    events = _eventually(lambda: mine() if len(mine()) == 2 else None, timeout=10)
    by_source = {event["source"]: event for event in events}
    assert by_source["fixture.publisher"]["detail-type"] == "FixturePublished"
    assert by_source["test.default-bus"]["detail-type"] == "FromTest"
    assert len(mine()) == 2  # cumulative and not duplicated
