"""The routing document: strict validation lists everything, lenient loading keeps calls going."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from callmesh_routing.core.document import (
    MAX_RATE_PROBLEMS,
    load_document,
    parse_json,
    validate_document,
)
from callmesh_routing.core.loading import LoadError
from callmesh_routing.core.numbers import NumberingPlan

EXAMPLE = Path(__file__).resolve().parent / "data" / "routing_document.json"


def example() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return data


def test_example_document_is_valid_and_loads() -> None:
    assert validate_document(example(), "t-1") == []
    loaded = load_document(example(), "t-1")
    assert loaded.tenant.tenant_id == "t-1"
    assert loaded.rate_count == 7  # distinct prefixes over the three trunks
    assert loaded.icm_window_days == 30
    assert loaded.skipped == ()


def test_tariff_names_flat_prices_and_bands() -> None:
    lcr = load_document(example(), "t-1").tenant.lcr
    assert lcr is not None
    number = NumberingPlan("RU").resolve("+78121234567")
    assert number is not None
    # Monday 12:00 Moscow: mts day price 0.90; 20:00 Moscow: its evening band 0.20.
    day = lcr.route(number, datetime(2026, 11, 23, 9, 0, tzinfo=UTC), {})
    assert [(r.trunk, r.price) for r in day.routes] == [
        ("rostelecom", Decimal("0.35")),
        ("mts", Decimal("0.90")),
        ("intl", Decimal("3.0")),
    ]
    evening = lcr.route(number, datetime(2026, 11, 23, 17, 0, tzinfo=UTC), {})
    assert evening.routes[0].trunk == "mts" and evening.routes[0].price == Decimal("0.20")


def test_equal_flat_prices_share_one_tariff() -> None:
    data = example()
    data["lcr"]["rates"]["rostelecom"] = {f"7{n:03d}": 0.5 for n in range(200)}
    lcr = load_document(data, "t-1").tenant.lcr
    assert lcr is not None
    tariffs = {id(lcr.rates.longest_matches(f"7{n:03d}00")["rostelecom"][1]) for n in range(200)}
    assert len(tariffs) == 1


def test_lenient_loading_skips_bad_rates_and_unknown_trunk_tables() -> None:
    data = example()
    data["lcr"]["rates"]["mts"]["79x"] = 1.0
    data["lcr"]["rates"]["mts"]["7921"] = -1
    data["lcr"]["rates"]["gone"] = {"7": 1.0}
    loaded = load_document(data, "t-1")
    assert loaded.rate_count == 7
    assert [p.path for p in loaded.skipped] == [
        "lcr.rates.gone",
        "lcr.rates.mts.79x",
        "lcr.rates.mts.7921",
    ]


def test_broken_trunks_refuse_the_tenant_rather_than_skip_permissions() -> None:
    data = example()
    data["lcr"]["trunks"][1]["selection_prefix"] = "*5"  # shadows nothing: fine
    data["lcr"]["trunks"].append({"id": "rostelecom"})
    with pytest.raises(LoadError) as caught:
        load_document(data, "t-1")
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("lcr.trunks.3.id", "duplicate trunk 'rostelecom'")
    ]
    data = example()
    data["lcr"]["trunks"][0]["selection_prefix"] = "*5"  # shadows mts's "*55"
    with pytest.raises(LoadError, match="carrier selection prefix '\\*5' shadows '\\*55'"):
        load_document(data, "t-1")


def test_rate_problems_are_capped() -> None:
    data = example()
    data["lcr"]["rates"]["mts"].update({f"7x{n}": 1 for n in range(MAX_RATE_PROBLEMS + 30)})
    problems = validate_document(data, "t-1")
    assert len(problems) == MAX_RATE_PROBLEMS + 1
    assert problems[-1].message == "... and 30 more bad rates"


def test_every_problem_is_listed_even_with_a_fatal_one() -> None:
    data = example()
    data["default_scenario"] = "gone"
    data["scenarios"][0]["steps"]["sales"]["group"] = "marketing"
    problems = validate_document(data, "t-1")
    assert [(p.path, p.message) for p in problems] == [
        ("scenarios.0.steps.sales.group", "unknown ring group 'marketing'"),
        ("default_scenario", "unknown scenario 'gone'"),
    ]


def test_document_shape_errors() -> None:
    assert [str(p) for p in validate_document([1], "t-1")] == ["<root>: expected an object"]
    with pytest.raises(LoadError, match="not valid JSON"):
        parse_json("{")
    data = example()
    data["lcr"] = {"trunks": [], "rates": [], "extra": 1}
    assert [(p.path, p.message) for p in validate_document(data, "t-1")] == [
        ("lcr.extra", "unknown field"),
        ("lcr.trunks", "is required (a list of trunks)"),
        ("lcr.rates", "expected an object of trunk id -> rate table"),
    ]
