"""Property tests: the fast structures agree with brute force on random inputs."""

from __future__ import annotations

from decimal import Decimal

from callmesh_routing.core.lcr import RateIndex, Tariff
from callmesh_routing.core.masks import Mask, MaskMatcher
from hypothesis import given, settings
from hypothesis import strategies as st

DIGITS = "0123"
TRUNKS = ("a", "b", "c")

prefixes = st.text(alphabet=DIGITS, min_size=1, max_size=6)
numbers = st.text(alphabet=DIGITS, min_size=1, max_size=9)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from(TRUNKS), prefixes), max_size=40),
    number=numbers,
)
def test_rate_index_matches_brute_force(rows: list[tuple[str, str]], number: str) -> None:
    tariffs = {row: Tariff(Decimal(index)) for index, row in enumerate(rows)}
    index = RateIndex(TRUNKS, [(trunk, prefix, tariffs[(trunk, prefix)]) for trunk, prefix in rows])
    expected: dict[str, str] = {}
    for trunk, prefix in rows:
        if number.startswith(prefix) and len(prefix) > len(expected.get(trunk, "")):
            expected[trunk] = prefix
    found = index.longest_matches(number)
    assert {trunk: prefix for trunk, (prefix, _) in found.items()} == expected
    for trunk, (prefix, tariff) in found.items():
        # The last row listing a (trunk, prefix) wins, as a re-import would.
        assert tariff is tariffs[(trunk, prefix)]


position = st.sampled_from(["0", "1", "2", "3", "X", "N", "Z", "[1-2]", "[03]"])
patterns = st.lists(position, min_size=1, max_size=5).map("".join)
ALLOWED = {"X": set("0123456789"), "N": set("23456789"), "Z": set("123456789")}


def brute_force(pattern: str, number: str) -> bool:
    sets: list[set[str]] = []
    index = 0
    while index < len(pattern):
        ch = pattern[index]
        if ch == "[":
            end = pattern.index("]", index)
            body = pattern[index + 1 : end]
            if "-" in body:
                sets.append({str(d) for d in range(int(body[0]), int(body[2]) + 1)})
            else:
                sets.append(set(body))
            index = end + 1
            continue
        sets.append(ALLOWED.get(ch, {ch}))
        index += 1
    return len(sets) == len(number) and all(d in s for d, s in zip(number, sets, strict=True))


@settings(max_examples=300, deadline=None)
@given(pattern=patterns, number=numbers)
def test_patterns_match_like_brute_force(pattern: str, number: str) -> None:
    # Plain digits are a prefix by definition; "=" makes them an exact pattern.
    if pattern.isdigit():
        assert Mask.parse(pattern).matches(number) is number.startswith(pattern)
        assert Mask.parse("=" + pattern).matches(number) is (number == pattern)
    else:
        assert Mask.parse(pattern).matches(number) is brute_force(pattern, number)


@settings(max_examples=200, deadline=None)
@given(masks=st.lists(st.one_of(patterns, prefixes), min_size=1, max_size=8), number=numbers)
def test_matcher_returns_a_most_specific_match(masks: list[str], number: str) -> None:
    parsed = [Mask.parse(text) for text in masks]
    hit = MaskMatcher((mask, i) for i, mask in enumerate(parsed)).match(number)
    matching = [i for i, mask in enumerate(parsed) if mask.matches(number)]
    if not matching:
        assert hit is None
        return
    assert hit is not None and hit.payload in matching
    best = max(parsed[i].specificity.key() for i in matching)
    assert hit.mask.specificity.key() == best
    # Among equally specific masks, the first declared.
    assert hit.payload == min(i for i in matching if parsed[i].specificity.key() == best)
