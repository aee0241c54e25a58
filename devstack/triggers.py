"""Event sources of the functions: schedules (``Schedule``/``ScheduleV2``) and SQS queues (``SQS``)."""

from __future__ import annotations

import base64
import calendar
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from devstack import config
from devstack.logs import LogSink, describe_outcome
from devstack.runtime import FunctionSpec, InvocationResult, LambdaRuntime
from devstack.template import Resolver, TemplateError

# ---------------------------------------------------------------------------------------------- schedules

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {name: index for index, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


class CronField:
    """One field of an EventBridge cron expression: ``*``, ``?``, lists, ranges, steps, names, L, W-less #."""

    def __init__(self, text: str, low: int, high: int, names: Mapping[str, int] | None = None) -> None:
        self.text = text.upper()
        self.any = self.text in ("*", "?")
        self.values: set[int] = set()
        self.last = False  # "L" (last day of month)
        self.nth: list[tuple[int, int]] = []  # weekday#n
        self.last_weekday: set[int] = set()  # weekdayL
        names = names or {}

        def number(token: str) -> int:
            value = names.get(token, None)
            return value if value is not None else int(token)

        if self.any:
            return
        for part in self.text.split(","):
            if part == "L":
                self.last = True
            elif "#" in part:
                weekday, nth = part.split("#", 1)
                self.nth.append((number(weekday), int(nth)))
            elif part.endswith("L") and part != "L":
                self.last_weekday.add(number(part[:-1]))
            else:
                base, _, step_text = part.partition("/")
                step = int(step_text) if step_text else 1
                if base == "*":
                    start, end = low, high
                elif "-" in base:
                    first, second = base.split("-", 1)
                    start, end = number(first), number(second)
                else:
                    start = number(base)
                    end = high if step_text else start
                if not (low <= start <= high and low <= end <= high) or step < 1:
                    raise TemplateError(f"cron field {text!r} is out of range {low}-{high}")
                self.values.update(range(start, end + 1, step))

    def matches(self, value: int) -> bool:
        return self.any or value in self.values


class Cron:
    def __init__(self, expression: str) -> None:
        fields = expression.split()
        if len(fields) != 6:
            raise TemplateError(f"cron({expression}) needs 6 fields: minutes hours day-of-month month day-of-week year")
        self.minute = CronField(fields[0], 0, 59)
        self.hour = CronField(fields[1], 0, 23)
        self.day = CronField(fields[2], 1, 31)
        self.month = CronField(fields[3], 1, 12, _MONTHS)
        self.weekday = CronField(fields[4], 1, 7, _WEEKDAYS)
        self.year = CronField(fields[5], 1970, 2199)

    def _day_matches(self, moment: datetime) -> bool:
        last_day = calendar.monthrange(moment.year, moment.month)[1]
        weekday = (moment.isoweekday() % 7) + 1  # SUN=1 .. SAT=7
        day_field, weekday_field = self.day, self.weekday
        day_ok = day_field.matches(moment.day) or (day_field.last and moment.day == last_day)
        weekday_ok = (
            weekday_field.matches(weekday)
            or any(weekday == wanted and (moment.day - 1) // 7 + 1 == nth for wanted, nth in weekday_field.nth)
            or (weekday in weekday_field.last_weekday and moment.day + 7 > last_day)
        )
        if day_field.text == "?":
            return weekday_ok
        if weekday_field.text == "?":
            return day_ok
        return day_ok and weekday_ok

    def next_after(self, moment: datetime) -> datetime | None:
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(200_000):
            if candidate.year > 2199:
                return None
            if not self.year.matches(candidate.year):
                candidate = candidate.replace(year=candidate.year + 1, month=1, day=1, hour=0, minute=0)
            elif not self.month.matches(candidate.month):
                month = candidate.month + 1
                year = candidate.year + (month > 12)
                candidate = candidate.replace(year=year, month=(month - 1) % 12 + 1, day=1, hour=0, minute=0)
            elif not self._day_matches(candidate):
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
            elif not self.hour.matches(candidate.hour):
                candidate = (candidate + timedelta(hours=1)).replace(minute=0)
            elif not self.minute.matches(candidate.minute):
                candidate += timedelta(minutes=1)
            else:
                return candidate
        return None


@dataclass(frozen=True)
class Schedule:
    function: str
    event_name: str
    kind: str  # "Schedule" (EventBridge rule) or "ScheduleV2" (EventBridge Scheduler)
    expression: str
    name: str
    input: str | None = None
    enabled: bool = True
    timezone: str = "UTC"

    @property
    def resource_arn(self) -> str:
        if self.kind == "ScheduleV2":
            return f"arn:{config.PARTITION}:scheduler:{config.REGION}:{config.ACCOUNT_ID}:schedule/default/{self.name}"
        return f"arn:{config.PARTITION}:events:{config.REGION}:{config.ACCOUNT_ID}:rule/{self.name}"

    def event(self, moment: datetime) -> Any:
        if self.input is not None:
            return json.loads(self.input)
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.scheduler" if self.kind == "ScheduleV2" else "aws.events",
            "account": config.ACCOUNT_ID,
            "time": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": config.REGION,
            "resources": [self.resource_arn],
            "detail": {},
        }

    def next_after(self, moment: datetime) -> datetime | None:
        """The first firing strictly after ``moment`` (for rate(): one period later)."""
        rate = _RATE.match(self.expression)
        if rate:
            return moment + timedelta(seconds=int(rate.group(1)) * _UNIT_SECONDS[rate.group(2).rstrip("s")])
        cron = _CRON.match(self.expression)
        if cron:
            zone = ZoneInfo(self.timezone)
            found = Cron(cron.group(1)).next_after(moment.astimezone(zone))
            return found.astimezone(UTC) if found else None
        at = _AT.match(self.expression)
        if at:
            when = datetime.fromisoformat(at.group(1)).replace(tzinfo=ZoneInfo(self.timezone)).astimezone(UTC)
            return when if when > moment else None
        raise TemplateError(f"unsupported schedule expression {self.expression!r}")


def schedules_of(spec: FunctionSpec, resolver: Resolver, stack_name: str) -> list[Schedule]:
    found: list[Schedule] = []
    for event_name, event in spec.events.items():
        kind = event.get("Type")
        if kind not in ("Schedule", "ScheduleV2"):
            continue
        properties = resolver.resolve(event.get("Properties") or {})
        expression = properties.get("Schedule" if kind == "Schedule" else "ScheduleExpression")
        state = str(properties.get("State", "ENABLED")).upper()
        enabled = bool(properties.get("Enabled", True)) and state == "ENABLED"
        raw_input = properties.get("Input")
        schedule = Schedule(
            function=spec.logical_id,
            event_name=event_name,
            kind=str(kind),
            expression=str(expression).strip(),
            name=str(properties.get("Name") or f"{stack_name}-{spec.logical_id}{event_name}")[:64],
            input=raw_input if isinstance(raw_input, str) or raw_input is None else json.dumps(raw_input),
            enabled=enabled,
            timezone=str(properties.get("ScheduleExpressionTimezone") or "UTC"),
        )
        schedule.next_after(datetime.now(UTC))  # validate the expression now
        found.append(schedule)
    return found


class Scheduler:
    """Fires the schedules on a clock that runs ``speedup`` times faster than real time."""

    def __init__(self, schedules: list[Schedule], runtime: LambdaRuntime, sink: LogSink, speedup: float = 1.0) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.schedules = [schedule for schedule in schedules if schedule.enabled]
        self.runtime = runtime
        self.sink = sink
        self.speedup = speedup
        self.fired: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._real_start = time.time()
        self._virtual_start = datetime.now(UTC)

    def virtual_now(self) -> datetime:
        return self._virtual_start + timedelta(seconds=(time.time() - self._real_start) * self.speedup)

    def start(self) -> None:
        if self.schedules:
            self._thread.start()

    def _run(self) -> None:
        upcoming: dict[Schedule, datetime | None] = {
            schedule: schedule.next_after(self._virtual_start) for schedule in self.schedules
        }
        while not self._stop.is_set():
            pending = [(when, schedule) for schedule, when in upcoming.items() if when is not None]
            if not pending:
                return
            when, schedule = min(pending, key=lambda item: item[0])
            wait = (when - self.virtual_now()).total_seconds() / self.speedup
            if wait > 0 and self._stop.wait(min(wait, 1.0)):
                return
            if wait > 1.0:
                continue
            spec = self.runtime.functions[schedule.function]
            self.runtime.invoke_async(spec, json.dumps(schedule.event(when)).encode(), on_done=self._reporter(schedule))
            key = (schedule.function, schedule.event_name)
            self.fired[key] = self.fired.get(key, 0) + 1
            upcoming[schedule] = schedule.next_after(when)

    def _reporter(self, schedule: Schedule) -> Callable[[InvocationResult], None]:
        def report(result: InvocationResult) -> None:
            outcome = describe_outcome(result.ok, result.payload)
            self.sink.activity(
                f"schedule {schedule.function} ({schedule.event_name}) {outcome} {result.duration_ms:.0f} ms"
            )

        return report

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


# ---------------------------------------------------------------------------------------------- SQS

_RECORD_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
)


@dataclass(frozen=True)
class QueueSource:
    function: str
    event_name: str
    queue_arn: str
    batch_size: int = 10
    batching_window: float = 0.0
    report_batch_item_failures: bool = False
    enabled: bool = True


def queue_sources_of(spec: FunctionSpec, resolver: Resolver) -> list[QueueSource]:
    found: list[QueueSource] = []
    for event_name, event in spec.events.items():
        if event.get("Type") != "SQS":
            continue
        properties = resolver.resolve(event.get("Properties") or {})
        found.append(
            QueueSource(
                function=spec.logical_id,
                event_name=event_name,
                queue_arn=str(properties["Queue"]),
                batch_size=int(properties.get("BatchSize", 10)),
                batching_window=float(properties.get("MaximumBatchingWindowInSeconds", 0)),
                report_batch_item_failures="ReportBatchItemFailures" in (properties.get("FunctionResponseTypes") or []),
                enabled=bool(properties.get("Enabled", True)),
            )
        )
    return found


def sqs_record(message: Mapping[str, Any], queue_arn: str) -> dict[str, Any]:
    attributes = message.get("Attributes") or {}
    message_attributes: dict[str, Any] = {}
    for name, item in (message.get("MessageAttributes") or {}).items():
        entry: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": item["DataType"]}
        if "StringValue" in item:
            entry["stringValue"] = item["StringValue"]
        if "BinaryValue" in item:
            entry["binaryValue"] = base64.b64encode(item["BinaryValue"]).decode()
        message_attributes[name] = entry
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {key: attributes[key] for key in _RECORD_ATTRIBUTES if key in attributes},
        "messageAttributes": message_attributes,
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": config.REGION,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


class SqsPoller:
    """Lambda's SQS event source mapping: receive a batch, invoke, delete what succeeded.

    Failed messages are left alone, so they reappear after the queue's visibility timeout and,
    after ``maxReceiveCount`` receives, the queue's redrive policy moves them to the DLQ.
    """

    def __init__(
        self,
        source: QueueSource,
        queue_url: str,
        runtime: LambdaRuntime,
        sqs_client: Callable[[], Any],
        sink: LogSink,
    ) -> None:
        self.source = source
        self.queue_url = queue_url
        self.runtime = runtime
        self.sqs = sqs_client()
        self.sink = sink
        self.batches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"sqs-{source.function}-{source.event_name}", daemon=True
        )

    def start(self) -> None:
        if self.source.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _receive(self) -> list[dict[str, Any]]:
        """One batch as Lambda gathers it: up to the batch size from as many receives (of at most 10, SQS's
        limit) as it takes, delivered when full or when the batching window has passed since its first
        message. Without a window that is the first receive's messages."""
        messages: list[dict[str, Any]] = []
        deadline = 0.0
        while len(messages) < self.source.batch_size and not self._stop.is_set():
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.source.batch_size - len(messages)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            received = response.get("Messages") or []
            if received and not messages:
                deadline = time.monotonic() + self.source.batching_window
            messages.extend(received)
            if not messages or time.monotonic() >= deadline:
                break
            if not received:
                self._stop.wait(0.1)
        return messages

    def _run(self) -> None:
        spec = self.runtime.functions[self.source.function]
        while not self._stop.is_set():
            try:
                messages = self._receive()
            except Exception as error:  # noqa: BLE001 (the embedded AWS is stopping or briefly busy)
                if self._stop.wait(0.5):
                    return
                self.sink.write(spec.logical_id, f"[devstack] SQS poll failed: {error}", echo=False)
                continue
            if not messages:
                self._stop.wait(0.2)
                continue
            self.batches += 1
            self._deliver(spec, messages)

    def _deliver(self, spec: FunctionSpec, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [sqs_record(message, self.source.queue_arn) for message in messages]}
        result = self.runtime.invoke(spec, json.dumps(event).encode())
        self.sink.activity(
            f"queue {spec.logical_id} ({len(messages)} message{'' if len(messages) == 1 else 's'}) "
            f"{describe_outcome(result.ok, result.payload)} "
            f"{result.duration_ms:.0f} ms"
        )
        if not result.ok:
            return  # the whole batch is retried after the visibility timeout
        failed: set[str] = set()
        if self.source.report_batch_item_failures:
            output = result.json()
            failures = output.get("batchItemFailures") if isinstance(output, dict) else None
            if failures:
                ids = {message["MessageId"] for message in messages}
                identifiers = [item.get("itemIdentifier") if isinstance(item, dict) else None for item in failures]
                if any(not identifier or identifier not in ids for identifier in identifiers):
                    return  # an invalid response fails the whole batch, as Lambda does
                failed = {str(identifier) for identifier in identifiers}
        done = [message for message in messages if message["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(chunk)
                ],
            )
