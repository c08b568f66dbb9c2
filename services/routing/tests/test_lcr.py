from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal

import pytest
from callmesh_routing.core.lcr import LeastCostRouter, RateIndex, Tariff, TimeBand, Trunk
from callmesh_routing.core.numbers import NumberClass, NumberingPlan
from callmesh_routing.core.timeconditions import WORKDAYS

PLAN = NumberingPlan("RU", local_prefixes=("7812",))
NOON = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # Monday 12:00 Moscow
NIGHT = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)  # Monday 23:00 Moscow


def flat(price: str) -> Tariff:
    return Tariff(Decimal(price))


DAY_NIGHT = Tariff(
    Decimal("0.60"),
    (TimeBand(WORKDAYS, time(8), time(20), Decimal("1.50")),),
)

TRUNKS = (
    Trunk("alpha", channel_limit=30, timezone="Europe/Moscow"),
    Trunk("beta", channel_limit=10, timezone="Europe/Moscow", selection_prefix="*55"),
    Trunk("gamma", timezone="Europe/Moscow", selection_prefix="*56", preference=1),
)
ROWS = [
    ("alpha", "7", flat("2.00")),
    ("alpha", "7812", flat("0.50")),
    ("beta", "78", flat("0.70")),
    ("beta", "781255", flat("0.10")),
    ("gamma", "7812", DAY_NIGHT),
    ("gamma", "44", flat("3.00")),
    ("alpha", "44", flat("3.00")),
]
ROUTER = LeastCostRouter.build(TRUNKS, ROWS)


def route(raw: str, now: datetime = NOON, **kwargs: object):  # type: ignore[no-untyped-def]
    number = PLAN.resolve(raw)
    assert number is not None
    return ROUTER.route(number, now, kwargs.pop("channels", {}), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("number", "now", "channels", "order", "prices"),
    [
        # Longest prefix per trunk: alpha 7812 @0.50, beta 78 @0.70, gamma 7812 day @1.50.
        ("+78121234567", NOON, {}, ("alpha", "beta", "gamma"), ("0.50", "0.70", "1.50")),
        # At night gamma's night band makes it cheaper than beta.
        ("+78121234567", NIGHT, {}, ("alpha", "gamma", "beta"), ("0.50", "0.60", "0.70")),
        # beta's longer prefix 781255 beats its own 78.
        ("+78125512345", NOON, {}, ("beta", "alpha", "gamma"), ("0.10", "0.50", "1.50")),
        # Only alpha's catch-all 7 covers Moscow; beta's 78 and gamma's 7812 do not.
        ("+74951234567", NOON, {}, ("alpha",), ("2.00",)),
        # A trunk at its channel limit is skipped; the next cheapest takes over.
        ("+78121234567", NOON, {"alpha": 30}, ("beta", "gamma"), ("0.70", "1.50")),
        ("+78121234567", NOON, {"alpha": 29}, ("alpha", "beta", "gamma"), ("0.50", "0.70", "1.50")),
        ("+78121234567", NOON, {"alpha": 30, "beta": 10}, ("gamma",), ("1.50",)),
        # Equal prices: the lower preference value first.
        ("+442079460958", NOON, {}, ("alpha", "gamma"), ("3.00", "3.00")),
    ],
)
def test_cheapest_first_with_failover_order(
    number: str,
    now: datetime,
    channels: dict[str, int],
    order: tuple[str, ...],
    prices: tuple[str, ...],
) -> None:
    decision = route(number, now, channels=channels)
    assert decision.trunk_order == order
    assert tuple(str(r.price) for r in decision.routes) == prices
    assert decision.denied is None


def test_skipped_trunks_are_reported() -> None:
    decision = route("+78121234567", channels={"alpha": 30})
    assert decision.skipped == ("alpha at channel limit 30/30",)
    assert "skipped alpha at channel limit 30/30" in decision.reason


def test_every_trunk_full_means_no_route() -> None:
    decision = route("+78121234567", channels={"alpha": 30, "beta": 10, "gamma": 10**6} | {})
    # gamma has no limit, so it still carries the call.
    assert decision.trunk_order == ("gamma",)
    limited = LeastCostRouter.build(TRUNKS[:2], ROWS[:4])
    number = PLAN.resolve("+78121234567")
    assert number is not None
    full = limited.route(number, NOON, {"alpha": 30, "beta": 10})
    assert full.routes == ()
    assert full.denied is not None and "no trunk" in full.denied


@pytest.mark.parametrize(
    ("number", "permission", "allowed"),
    [
        ("+78121234567", NumberClass.LOCAL, True),
        ("+74951234567", NumberClass.LOCAL, False),
        ("+74951234567", NumberClass.LONG_DISTANCE, True),
        ("+442079460958", NumberClass.LONG_DISTANCE, False),
        ("+442079460958", NumberClass.INTERNATIONAL, True),
        ("+78121234567", NumberClass.INTERNAL, False),
    ],
)
def test_permission_classes(number: str, permission: NumberClass, allowed: bool) -> None:
    decision = route(number, permission=permission)
    assert (decision.denied is None) is allowed
    if not allowed:
        assert decision.denied is not None and "not allowed" in decision.denied


def test_manual_carrier_selection_prefix_forces_the_trunk() -> None:
    trunk, rest = ROUTER.split_carrier_selection("*5688121234567")
    assert trunk is not None and trunk.id == "gamma"
    assert rest == "88121234567"
    decision = route(rest, forced_trunk=trunk.id)
    assert decision.trunk_order == ("gamma",)
    assert "carrier selected: gamma" in decision.reason
    assert ROUTER.split_carrier_selection("88121234567") == (None, "88121234567")


def test_selection_prefixes_must_not_shadow_each_other() -> None:
    with pytest.raises(ValueError, match="shadows"):
        LeastCostRouter.build(
            [Trunk("a", selection_prefix="*5"), Trunk("b", selection_prefix="*55")], []
        )


def test_rate_index_longest_match_and_reimport() -> None:
    index = RateIndex(
        ["a", "b"],
        [
            ("a", "7", flat("1")),
            ("a", "781", flat("2")),
            ("b", "78", flat("3")),
            ("a", "781", flat("4")),
        ],  # re-import of a's 781 replaces the old rate
    )
    assert len(index) == 3
    found = index.longest_matches("78121234567")
    assert {k: (p, str(t.price)) for k, (p, t) in found.items()} == {
        "a": ("781", "4"),
        "b": ("78", "3"),
    }
    assert index.longest_matches("1") == {}


@pytest.mark.parametrize(
    ("rows", "message"),
    [([("nope", "7", flat("1"))], "unknown trunk"), ([("a", "7x", flat("1"))], "not digits")],
)
def test_rate_index_rejects_bad_rows(rows: list[tuple[str, str, Tariff]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateIndex(["a"], rows)


def test_overnight_band() -> None:
    tariff = Tariff(Decimal("1"), (TimeBand(WORKDAYS, time(22), time(6), Decimal("0.2")),))
    moscow = datetime(2026, 11, 23, 23, 30)  # naive local wall clock for the band check
    assert tariff.price_at(moscow) == Decimal("0.2")
    assert tariff.price_at(moscow.replace(hour=12)) == Decimal("1")
