"""Feed schedules: "every N minutes" or a five-field cron expression (UTC), and their next run time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))
_PART = re.compile(r"^(\*|[0-9]{1,2}(?:-[0-9]{1,2})?)(?:/([0-9]{1,2}))?$")  # ASCII digits only
SEARCH_DAYS = 366 * 4  # 29 February exists at least once in four years


class CronError(ValueError):
    pass


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        match = _PART.match(part)
        if not match:
            raise CronError(f"invalid {name} field {text!r}")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if span == "*":
            start, end = low, high
        elif "-" in span:
            start, end = (int(x) for x in span.split("-"))
        else:
            start = end = int(span)
            if step_text:
                end = high
        if name == "day of week" and end == 7:  # 7 is Sunday too
            if (7 - start) % step == 0:
                values.add(0)
            if start == 7:
                continue
            end = 6
        if not (low <= start <= end <= high) or step < 1:
            raise CronError(f"{name} field {text!r} is out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        fields = expression.split()
        if len(fields) != 5:
            raise CronError("a cron expression has five fields: minute hour day-of-month month day-of-week")
        minutes, hours, days, months, weekdays = (
            _parse_field(text, *spec) for text, spec in zip(fields, _FIELDS, strict=True)
        )
        cron = cls(minutes, hours, days, months, weekdays, any_day=fields[2] == "*", any_weekday=fields[4] == "*")
        if cron.next_after(datetime(2000, 1, 1)) is None:
            raise CronError("the cron expression never matches")
        return cron

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # cron: both restricted means either may match
            return in_month and in_week
        return in_month or in_week

    def next_after(self, moment: datetime) -> datetime | None:
        start = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(SEARCH_DAYS):
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= start:
                            return candidate
            day += timedelta(days=1)
        return None


def next_run(schedule: str, after: datetime) -> datetime:
    """`schedule` as stored: "rate:<minutes>" or "cron:<expression>"."""
    kind, _, value = schedule.partition(":")
    if kind == "rate":
        return after + timedelta(minutes=int(value))
    found = Cron.parse(value).next_after(after)
    if found is None:  # parse() refuses expressions that never match
        raise CronError("the cron expression never matches")
    return found
