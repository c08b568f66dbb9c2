from __future__ import annotations

import pytest
from callmesh_routing.core.masks import Mask, MaskError, MaskKind, MaskMatcher


@pytest.mark.parametrize(
    ("mask", "number", "matches"),
    [
        ("7812", "78121234567", True),
        ("7812", "74951234567", False),
        ("7812XXXXXXX", "78121234567", True),
        ("7812XXXXXXX", "781212345678", False),  # one digit too many
        ("7812XXXXXXX", "7812123456", False),  # one digit short
        ("791NXXXXXXX", "79161234567", True),
        ("79NXXXXXXXX", "79161234567", False),  # N is 2-9
        ("7N", "71", False),
        ("7N", "72", True),
        ("7Z", "70", False),
        ("7Z", "71", True),
        ("7[1-5]", "73", True),
        ("7[1-5]", "76", False),
        ("7[135]", "73", True),
        ("7[135]", "72", False),
        ("7[1-35-7]", "76", True),
        ("7[1-35-7]", "74", False),
        ("7812.", "78121", True),
        ("7812.", "7812", False),  # '.' wants at least one more character
        ("=78121234567", "78121234567", True),
        ("=78121234567", "781212345670", False),
        ("re:^79(16|26)", "79261234567", True),
        ("re:^79(16|26)", "79031234567", False),
        ("*9X", "*95", True),
    ],
)
def test_mask_matching(mask: str, number: str, matches: bool) -> None:
    assert Mask.parse(mask).matches(number) is matches


@pytest.mark.parametrize(
    ("mask", "kind"),
    [("7812", MaskKind.PREFIX), ("7812X", MaskKind.PATTERN), ("re:7", MaskKind.REGEX)],
)
def test_mask_kinds(mask: str, kind: MaskKind) -> None:
    assert Mask.parse(mask).kind is kind


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        ("", "empty"),
        ("78[12", "unclosed"),
        ("7.8", "may only end"),
        ("7Q", "unexpected 'Q'"),
        ("7[5-1]", "bad range"),
        ("7[]", "empty"),
        ("re:(", "invalid regular expression"),
        ("=78X", "exact mask"),
    ],
)
def test_bad_masks_say_why(mask: str, message: str) -> None:
    with pytest.raises(MaskError, match=message):
        Mask.parse(mask)


@pytest.mark.parametrize(
    ("masks", "number", "winner"),
    [
        # A longer prefix is more specific than a shorter one.
        (["7", "78", "7812"], "78121234567", "7812"),
        # At equal weight, fixing the length wins over an open prefix.
        (["7812", "7812XXXXXXX"], "78121234567", "7812XXXXXXX"),
        # One more literal digit outweighs the fixed length.
        (["7812XXXXXXX", "78121"], "78121234567", "78121"),
        # Literal beats a digit set beats N beats Z beats X at the same position.
        (["781X", "781Z", "781N", "781[2-3]", "7812"], "7812", "7812"),
        (["781X", "781Z", "781N", "781[2-3]"], "7812", "781[2-3]"),
        (["781X", "781Z", "781N"], "7812", "781N"),
        (["781X", "781Z"], "7812", "781Z"),
        # The exact number beats every pattern covering it.
        (["7812XXXXXXX", "=78121234567", "78121234"], "78121234567", "=78121234567"),
        # Structural masks beat regular expressions; regex still catches the rest.
        (["re:^7812", "7"], "78121234567", "7"),
        (["re:^7812", "8"], "78121234567", "re:^7812"),
        # Equal specificity: the first declared wins.
        (["7812X.", "7812Z."], "781211", "7812Z."),
    ],
)
def test_most_specific_mask_wins(masks: list[str], number: str, winner: str) -> None:
    matcher = MaskMatcher((Mask.parse(m), m) for m in masks)
    hit = matcher.match(number)
    assert hit is not None
    assert hit.payload == winner


def test_declaration_order_breaks_ties() -> None:
    matcher = MaskMatcher([(Mask.parse("78XX"), "first"), (Mask.parse("7X8X"), "second")])
    hit = matcher.match("7888")
    assert hit is not None and hit.payload == "first"


def test_explicit_priority_overrides_specificity() -> None:
    matcher = MaskMatcher(
        [(Mask.parse("7812XXXXXXX"), "pattern"), (Mask.parse("re:^7", priority=1), "regex")]
    )
    hit = matcher.match("78121234567")
    assert hit is not None and hit.payload == "regex"


def test_match_all_lists_every_hit_most_specific_first() -> None:
    matcher = MaskMatcher((Mask.parse(m), m) for m in ["7", "7812XXXXXXX", "495", "78"])
    assert [h.payload for h in matcher.match_all("78121234567")] == ["7812XXXXXXX", "78", "7"]
    assert matcher.match("1") is None
    assert len(matcher) == 4
