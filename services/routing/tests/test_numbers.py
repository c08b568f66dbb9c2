from __future__ import annotations

import pytest
from callmesh_routing.core.numbers import NumberClass, NumberingPlan

SPB = NumberingPlan("RU", local_prefixes=("7812",), max_internal_digits=4)
KYIV = NumberingPlan("UA", local_prefixes=("38044",))


@pytest.mark.parametrize(
    ("plan", "raw", "canonical", "number_class"),
    [
        (SPB, "8 (812) 123-45-67", "+78121234567", NumberClass.LOCAL),
        (SPB, "+7 812 123 45 67", "+78121234567", NumberClass.LOCAL),
        (SPB, "78121234567", "+78121234567", NumberClass.LOCAL),
        (SPB, "8 495 123-45-67", "+74951234567", NumberClass.LONG_DISTANCE),
        (SPB, "8 916 123-45-67", "+79161234567", NumberClass.LONG_DISTANCE),
        (SPB, "810 44 20 7946 0958", "+442079460958", NumberClass.INTERNATIONAL),
        (SPB, "442079460958", "+442079460958", NumberClass.INTERNATIONAL),
        (SPB, "+380 44 123 4567", "+380441234567", NumberClass.INTERNATIONAL),
        (SPB, "101", "101", NumberClass.INTERNAL),
        (SPB, "*97", "*97", NumberClass.INTERNAL),
        (KYIV, "044 123 4567", "+380441234567", NumberClass.LOCAL),
        (KYIV, "067 123 4567", "+380671234567", NumberClass.LONG_DISTANCE),
        (KYIV, "00 7 812 123 45 67", "+78121234567", NumberClass.INTERNATIONAL),
        (NumberingPlan("DE"), "030 1234567", "+49301234567", NumberClass.LOCAL),
    ],
)
def test_resolve_normalises_and_classifies(
    plan: NumberingPlan, raw: str, canonical: str, number_class: NumberClass
) -> None:
    resolved = plan.resolve(raw)
    assert resolved is not None
    assert resolved.canonical == canonical
    assert resolved.number_class is number_class
    assert resolved.digits == canonical.removeprefix("+")


@pytest.mark.parametrize("raw", ["", "12345", "+7 812", "hello", "8 812 12"])
def test_invalid_numbers_resolve_to_none(raw: str) -> None:
    # 12345 is longer than the 4-digit internal plan and not a valid outside number.
    assert SPB.resolve(raw) is None


def test_kazakhstan_shares_plus7_but_is_international_for_russia() -> None:
    resolved = SPB.resolve("+7 727 258 1234")
    assert resolved is not None
    assert resolved.region == "KZ"
    assert resolved.number_class is NumberClass.INTERNATIONAL


def test_to_e164_refuses_short_numbers() -> None:
    assert SPB.to_e164("101") is None
    assert SPB.to_e164("8 812 123 45 67") == "+78121234567"


def test_unknown_region_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown region"):
        NumberingPlan("XX")


def test_permission_classes_are_ordered() -> None:
    assert (
        NumberClass.INTERNAL
        < NumberClass.LOCAL
        < NumberClass.LONG_DISTANCE
        < NumberClass.INTERNATIONAL
    )
