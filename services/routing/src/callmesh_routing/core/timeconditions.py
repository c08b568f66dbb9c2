"""Time conditions in the tenant's time zone: weekly schedules, holidays, one-off overrides.

Precedence, highest first: a one-off override covering `now` (open or closed), then a holiday
(closed all day, including observed/substituted days off the `holidays` package reports, such
as Russia's Monday after a Sunday holiday), then the weekly schedule.

DST: weekly rules are wall-clock times, so `now` is converted to the tenant's zone before
comparing ("09:00-18:00" stays 09:00-18:00 local on both sides of a change). Overrides are
given in local wall time and converted to UTC once, at build time; all comparisons of instants
happen in UTC because Python compares two datetimes sharing one tzinfo by wall time alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def number(self) -> int:
        """Monday is 0, as `datetime.weekday()` counts."""
        return _WEEKDAY_NUMBERS[self]


_WEEKDAY_NUMBERS = {day: position for position, day in enumerate(Weekday)}


def weekday_numbers(days: tuple[Weekday, ...]) -> frozenset[int]:
    return frozenset(_WEEKDAY_NUMBERS[day] for day in days)


WORKDAYS = (Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI)


def require_aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("`now` must be timezone-aware")
    return now


def load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


@dataclass(frozen=True, slots=True)
class WeeklyRule:
    """Open on `days` from `start` to `end` local time; end <= start runs past midnight.

    A rule "fri 22:00-06:00" covers Friday 22:00 to Saturday 06:00; start == end is 24 hours.
    """

    name: str
    days: tuple[Weekday, ...]
    start: time
    end: time
    _day_numbers: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_day_numbers", weekday_numbers(self.days))

    def covers(self, local: datetime) -> bool:
        wall = local.time()
        today = local.weekday()
        yesterday = (today - 1) % 7
        indices = self._day_numbers
        if self.start < self.end:
            return today in indices and self.start <= wall < self.end
        # Overnight (or full-day) rule: the evening part belongs to the listed day, the early
        # morning part to the day after it.
        return (today in indices and wall >= self.start) or (
            yesterday in indices and wall < self.end
        )


@dataclass(frozen=True, slots=True)
class Override:
    """A one-off period (local wall time) forced open or closed, e.g. an inventory day."""

    name: str
    start: datetime
    end: datetime
    open: bool


@dataclass(slots=True)
class HolidayCalendar:
    """Public holidays of a country (optionally a subdivision) plus the company's own days."""

    country: str
    subdivision: str | None = None
    company_days: Mapping[date, str] = field(default_factory=dict)
    _calendar: holidays_lib.HolidayBase = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self._calendar = holidays_lib.country_holidays(
                self.country, subdiv=self.subdivision, observed=True
            )
        except NotImplementedError as exc:
            # The package says which part is unknown (the country or its subdivision).
            raise ValueError(f"holiday calendar: {exc}") from None

    def holiday_name(self, day: date) -> str | None:
        if day in self.company_days:
            return self.company_days[day]
        # `get` fills the year on first use; the calendar object keeps it afterwards.
        name = self._calendar.get(day)
        return str(name) if name is not None else None


class DecisionSource(StrEnum):
    OVERRIDE = "override"
    HOLIDAY = "holiday"
    WEEKLY = "weekly"


@dataclass(frozen=True, slots=True)
class TimeDecision:
    condition: str
    matched: bool
    source: DecisionSource
    detail: str
    local_time: datetime

    @property
    def reason(self) -> str:
        verdict = "matched" if self.matched else "not matched"
        stamp = self.local_time.strftime("%a %Y-%m-%d %H:%M")
        return f"time condition {self.condition!r} {verdict}: {self.detail} ({stamp} local)"


@dataclass(slots=True)
class TimeCondition:
    """A named schedule; `evaluate(now)` says whether `now` is inside it and why."""

    name: str
    timezone: str
    weekly: tuple[WeeklyRule, ...] = ()
    holidays: HolidayCalendar | None = None
    overrides: tuple[Override, ...] = ()
    _zone: ZoneInfo = field(init=False, repr=False)
    _overrides_utc: tuple[tuple[datetime, datetime, Override], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._zone = load_zone(self.timezone)
        converted = []
        for override in self.overrides:
            if override.end <= override.start:
                raise ValueError(f"override {override.name!r} ends before it starts")
            converted.append((self._to_utc(override.start), self._to_utc(override.end), override))
        self._overrides_utc = tuple(converted)

    def _to_utc(self, wall: datetime) -> datetime:
        if wall.tzinfo is not None:
            return wall.astimezone(UTC)
        # fold=0: an ambiguous wall time (clocks going back) means its first occurrence; a
        # time skipped by clocks going forward maps to the instant it would have had.
        return wall.replace(tzinfo=self._zone).astimezone(UTC)

    def evaluate(self, now: datetime) -> TimeDecision:
        now_utc = require_aware(now).astimezone(UTC)
        local = now_utc.astimezone(self._zone)
        for start, end, override in self._overrides_utc:
            if start <= now_utc < end:
                state = "open" if override.open else "closed"
                detail = f"override {override.name!r} ({state})"
                return TimeDecision(
                    self.name, override.open, DecisionSource.OVERRIDE, detail, local
                )
        if self.holidays is not None:
            holiday = self.holidays.holiday_name(local.date())
            if holiday is not None:
                detail = f"holiday {holiday!r} on {local.date().isoformat()}"
                return TimeDecision(self.name, False, DecisionSource.HOLIDAY, detail, local)
        for rule in self.weekly:
            if rule.covers(local):
                detail = f"weekly rule {rule.name!r}"
                return TimeDecision(self.name, True, DecisionSource.WEEKLY, detail, local)
        return TimeDecision(
            self.name, False, DecisionSource.WEEKLY, "outside the weekly schedule", local
        )
