from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from callmesh_routing.core.icm import (
    Availability,
    CallHistory,
    IcmCandidate,
    IcmPolicy,
    PrefetchedSource,
    decide_icm,
)
from callmesh_routing.core.ringgroups import MemberState

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CALLER = "+78121234567"
MOBILES = {"104": "+79161112233"}


def history(*entries: tuple[str, str, int]) -> CallHistory:
    """(caller, employee, days ago) entries."""
    store = CallHistory()
    for caller, employee, days_ago in entries:
        store.record(caller, employee, NOW - timedelta(days=days_ago))
    return store


@pytest.mark.parametrize(
    ("entries", "policy", "presence", "employee", "targets", "reason_part"),
    [
        (
            [(CALLER, "104", 3)],
            IcmPolicy(),
            {},
            "104",
            ("104",),
            "last talked to 104 on 2026-11-20",
        ),
        # The most recent conversation wins.
        ([(CALLER, "104", 3), (CALLER, "105", 1)], IcmPolicy(), {}, "105", ("105",), "105"),
        # History older than the window is ignored.
        ([(CALLER, "104", 31)], IcmPolicy(window_days=30), {}, None, (), "nobody talked"),
        ([(CALLER, "104", 29)], IcmPolicy(window_days=30), {}, "104", ("104",), "104"),
        # Another caller's history is not this caller's.
        ([("+74951234567", "104", 1)], IcmPolicy(), {}, None, (), "nobody"),
        # Only if available: a busy employee falls through to an older, free one.
        (
            [(CALLER, "105", 10), (CALLER, "104", 1)],
            IcmPolicy(),
            {"104": MemberState(available=False)},
            "105",
            ("105",),
            "105",
        ),
        (
            [(CALLER, "104", 1)],
            IcmPolicy(),
            {"104": MemberState(available=False)},
            None,
            (),
            "104 unavailable",
        ),
        # "Always" plus their mobile: ring both even though the desk is busy.
        (
            [(CALLER, "104", 1)],
            IcmPolicy(availability=Availability.ALWAYS, also_mobile=True),
            {"104": MemberState(available=False)},
            "104",
            ("104", "+79161112233"),
            "104",
        ),
        (
            [(CALLER, "104", 1)],
            IcmPolicy(also_mobile=True),
            {},
            "104",
            ("104", "+79161112233"),
            "104",
        ),
        # Excluded employees (the receptionist) are passed over.
        (
            [(CALLER, "100", 1), (CALLER, "104", 2)],
            IcmPolicy(excluded_employees=("100",)),
            {},
            "104",
            ("104",),
            "104",
        ),
        # Excluded callers get no ICM at all.
        (
            [(CALLER, "104", 1)],
            IcmPolicy(excluded_callers=("7812XXXXXXX",)),
            {},
            None,
            (),
            "caller excluded by '7812XXXXXXX'",
        ),
    ],
)
def test_icm_from_history(
    entries: list[tuple[str, str, int]],
    policy: IcmPolicy,
    presence: dict[str, MemberState],
    employee: str | None,
    targets: tuple[str, ...],
    reason_part: str,
) -> None:
    decision = decide_icm(policy, CALLER, NOW, [history(*entries)], presence, MOBILES)
    assert decision.employee == employee
    assert decision.targets == targets
    assert reason_part in decision.reason


def test_sources_are_asked_in_order_and_the_first_usable_wins() -> None:
    crm = PrefetchedSource(
        "crm", {CALLER: (IcmCandidate("107", NOW - timedelta(days=100), "crm"),)}
    )
    own = history((CALLER, "104", 2))
    # History first: the recent conversation wins; the CRM answer is outside the window.
    first = decide_icm(IcmPolicy(window_days=30), CALLER, NOW, [own, crm], {}, {})
    assert (first.employee, first.source) == ("104", "history")
    fresh_crm = PrefetchedSource("crm", {CALLER: (IcmCandidate("107", NOW, "crm"),)})
    second = decide_icm(IcmPolicy(), CALLER, NOW, [fresh_crm, own], {}, {})
    assert (second.employee, second.source) == ("107", "crm")
    # An unusable answer from the first source falls through to the next one.
    third = decide_icm(
        IcmPolicy(), CALLER, NOW, [fresh_crm, own], {"107": MemberState(available=False)}, {}
    )
    assert (third.employee, third.source) == ("104", "history")


def test_employees_who_left_are_skipped() -> None:
    own = history((CALLER, "199", 1), (CALLER, "104", 5))
    decision = decide_icm(IcmPolicy(), CALLER, NOW, [own], {}, {}, known_employees={"104"})
    assert decision.employee == "104"


def test_history_is_bounded_ordered_and_idempotent() -> None:
    store = CallHistory(per_caller=3)
    moments = [NOW - timedelta(hours=h) for h in (5, 1, 3, 2, 4)]
    for index, moment in enumerate(moments):
        store.record(CALLER, f"10{index}", moment)
        store.record(CALLER, f"10{index}", moment)  # Kafka redelivery
    found = store.candidates(CALLER, NOW - timedelta(days=1))
    # Three kept; newest first. The out-of-order arrival is placed correctly.
    assert [c.employee for c in found] == ["101", "103", "102"]
    assert store.candidates("+70000000000", NOW - timedelta(days=1)) == []
