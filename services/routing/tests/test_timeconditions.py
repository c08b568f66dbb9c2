from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest
from callmesh_routing.core.timeconditions import (
    WORKDAYS,
    DecisionSource,
    HolidayCalendar,
    Override,
    TimeCondition,
    Weekday,
    WeeklyRule,
)

OFFICE = WeeklyRule("weekdays", WORKDAYS, time(9), time(18))
SATURDAY_NIGHT = WeeklyRule("saturday night", (Weekday.SAT,), time(22), time(6))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def kyiv(**kwargs: object) -> TimeCondition:
    return TimeCondition("office", "Europe/Kyiv", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "matched", "why"),
    [
        # Friday before the spring change: UTC+2, 06:30 UTC is 08:30 local: closed.
        (utc(2026, 3, 27, 6, 30), False, "outside"),
        # Monday after it: UTC+3, the same 06:30 UTC is 09:30 local: open.
        (utc(2026, 3, 30, 6, 30), True, "weekdays"),
        # Closing time follows the wall clock too: 15:30 UTC is 17:30 / 18:30 local.
        (utc(2026, 3, 27, 15, 30), True, "weekdays"),
        (utc(2026, 3, 30, 15, 30), False, "outside"),
        # Autumn change (last Sunday of October): Monday 26 Oct is UTC+2 again.
        (utc(2026, 10, 23, 6, 30), True, "weekdays"),
        (utc(2026, 10, 26, 6, 30), False, "outside"),
        (utc(2026, 10, 26, 7, 0), True, "weekdays"),
    ],
)
def test_weekly_schedule_follows_local_wall_clock_across_dst(
    now: datetime, matched: bool, why: str
) -> None:
    decision = kyiv(weekly=(OFFICE,)).evaluate(now)
    assert decision.matched is matched
    assert decision.source is DecisionSource.WEEKLY
    assert why in decision.detail


@pytest.mark.parametrize(
    ("now", "matched"),
    [
        (utc(2026, 3, 28, 19, 59), False),  # Sat 21:59 local (UTC+2)
        (utc(2026, 3, 28, 20, 0), True),  # Sat 22:00
        # Clocks jump 03:00 -> 04:00 this night. 02:30 UTC is 05:30 local (UTC+3): open.
        (utc(2026, 3, 29, 2, 30), True),
        # 03:30 UTC is 06:30 local: the rule has ended, although a fixed UTC+2 offset
        # would still say 05:30.
        (utc(2026, 3, 29, 3, 30), False),
        (utc(2026, 3, 27, 23, 0), False),  # Saturday 01:00 belongs to Friday night: not listed
    ],
)
def test_overnight_rule_across_spring_forward(now: datetime, matched: bool) -> None:
    assert kyiv(weekly=(SATURDAY_NIGHT,)).evaluate(now).matched is matched


def test_override_spanning_repeated_hour_is_three_real_hours() -> None:
    # 25 Oct 2026 in Kyiv: 04:00 EEST becomes 03:00 EET, so 03:00-05:00 local lasts 3 hours.
    closed = Override("maintenance", datetime(2026, 10, 25, 3), datetime(2026, 10, 25, 5), False)
    condition = kyiv(
        weekly=(WeeklyRule("always", tuple(Weekday), time(0), time(0)),), overrides=(closed,)
    )
    assert condition.evaluate(utc(2026, 10, 24, 23, 59)).matched  # 02:59 EEST
    assert not condition.evaluate(utc(2026, 10, 25, 0, 0)).matched  # first 03:00
    assert not condition.evaluate(utc(2026, 10, 25, 1, 30)).matched  # second 03:30
    assert not condition.evaluate(utc(2026, 10, 25, 2, 59)).matched  # 04:59 EET
    assert condition.evaluate(utc(2026, 10, 25, 3, 0)).matched  # 05:00 EET


MOSCOW_RU = TimeCondition(
    "office", "Europe/Moscow", weekly=(OFFICE,), holidays=HolidayCalendar("RU")
)


@pytest.mark.parametrize(
    ("local_day", "matched", "source", "detail"),
    [
        # 8 March 2026 is a Sunday: closed anyway, and the holiday is the reason given.
        (date(2026, 3, 8), False, DecisionSource.HOLIDAY, "International Women's Day"),
        # ...and the day off moves to Monday 9 March.
        (date(2026, 3, 9), False, DecisionSource.HOLIDAY, "(observed)"),
        (date(2026, 3, 10), True, DecisionSource.WEEKLY, "weekdays"),
        # 9 May 2026 (Victory Day) is a Saturday; observed on Monday 11 May.
        (date(2026, 5, 11), False, DecisionSource.HOLIDAY, "Victory Day"),
        # A substituted day off: Friday 9 January 2026.
        (date(2026, 1, 9), False, DecisionSource.HOLIDAY, "substituted"),
        (date(2026, 3, 14), False, DecisionSource.WEEKLY, "outside"),  # ordinary Saturday
    ],
)
def test_russian_holidays_including_ones_falling_on_a_weekend(
    local_day: date, matched: bool, source: DecisionSource, detail: str
) -> None:
    now = datetime.combine(local_day, time(7, 0), tzinfo=UTC)  # 10:00 Moscow
    decision = MOSCOW_RU.evaluate(now)
    assert (decision.matched, decision.source) == (matched, source)
    assert detail in decision.detail


@pytest.mark.parametrize(
    ("local_day", "matched", "detail"),
    [
        (date(2021, 8, 24), False, "Independence Day"),
        (date(2021, 12, 27), False, "Christmas Day (observed)"),  # 25 Dec was a Saturday
        (date(2021, 8, 23), False, "substituted"),
        (date(2021, 8, 25), True, "weekdays"),
    ],
)
def test_ukrainian_holidays(local_day: date, matched: bool, detail: str) -> None:
    condition = kyiv(weekly=(OFFICE,), holidays=HolidayCalendar("UA"))
    decision = condition.evaluate(datetime.combine(local_day, time(8, 0), tzinfo=UTC))
    assert decision.matched is matched
    assert detail in decision.detail


def test_precedence_override_beats_holiday_beats_weekly() -> None:
    company = HolidayCalendar("RU", company_days={date(2026, 3, 12): "Company day"})
    condition = TimeCondition(
        "office",
        "Europe/Moscow",
        weekly=(OFFICE,),
        holidays=company,
        overrides=(
            Override(
                "open on the holiday", datetime(2026, 3, 9, 9), datetime(2026, 3, 9, 13), True
            ),
            Override("closed for inventory", datetime(2026, 3, 11), datetime(2026, 3, 12), False),
        ),
    )
    at = {
        "holiday morning": utc(2026, 3, 9, 7),  # 10:00 local, inside the open override
        "holiday afternoon": utc(2026, 3, 9, 11),  # 14:00, override over: holiday again
        "inventory": utc(2026, 3, 11, 7),  # Wednesday, weekly would say open
        "company day": utc(2026, 3, 12, 7),
        "normal": utc(2026, 3, 13, 7),
    }
    results = {name: condition.evaluate(now) for name, now in at.items()}
    assert results["holiday morning"].matched
    assert results["holiday morning"].source is DecisionSource.OVERRIDE
    assert not results["holiday afternoon"].matched
    assert results["holiday afternoon"].source is DecisionSource.HOLIDAY
    assert not results["inventory"].matched
    assert "inventory" in results["inventory"].reason
    assert results["company day"].source is DecisionSource.HOLIDAY
    assert "Company day" in results["company day"].detail
    assert results["normal"].matched


def test_reason_names_condition_rule_and_local_time() -> None:
    decision = MOSCOW_RU.evaluate(utc(2026, 3, 10, 7, 5))
    assert decision.reason == (
        "time condition 'office' matched: weekly rule 'weekdays' (Tue 2026-03-10 10:05 local)"
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TimeCondition("x", "Mars/Olympus"), "unknown time zone"),
        (lambda: HolidayCalendar("ZZ"), "holiday calendar"),
        (lambda: HolidayCalendar("RU", subdivision="ZZ"), "subdivision"),
        (
            lambda: TimeCondition(
                "x",
                "UTC",
                overrides=(Override("o", datetime(2026, 1, 2), datetime(2026, 1, 1), True),),
            ),
            "ends before it starts",
        ),
    ],
)
def test_configuration_errors(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        MOSCOW_RU.evaluate(datetime(2026, 3, 10, 10))
