"""Number masks: prefixes, digit patterns with wildcards, regular expressions.

Masks are written against E.164 digits without '+' (or a bare short number):

    "7812"          prefix: every number starting with 7812
    "7812XXXXXXX"   pattern: exactly eleven digits starting with 7812
    "=74951234567"  exact number (a pattern made of literals only)
    "re:^79(16|26)" regular expression, applied with `re.search` (anchor it yourself)

Pattern characters: a digit, '*' or '#' matches itself; X any digit; Z 1-9; N 2-9;
[1-5] / [135] / [1-35-7] one digit from the set; '.' (last character only) one or more further
characters. Anything with a wildcard is a pattern; plain digits are a prefix.

Specificity (which mask wins when several match one number), compared in this order:
  1. explicit `priority` (higher wins) — the escape hatch for the cases below;
  2. weight: the sum over positions of (10 - how many digits the position accepts), so a
     literal scores 9, [1-5] 5, N 2, Z 1, X 0 — "78123" (45) beats "7812XXXXXXX" (36);
  3. a mask that fixes the number's length beats an open-ended one at equal weight
     ("7812XXXXXXX" beats "7812");
  4. prefixes and patterns beat regular expressions, whose specificity cannot be computed
     (a regex has weight 0);
  5. the mask declared first wins.
Everything is compiled once, when the matcher is built.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

_Payload = TypeVar("_Payload")

_WILDCARDS = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]"}
_WILDCARD_SIZES = {"X": 10, "Z": 9, "N": 8}


class MaskError(ValueError):
    """A mask that cannot be compiled; the message says where and why."""


class MaskKind(StrEnum):
    PREFIX = "prefix"
    PATTERN = "pattern"
    REGEX = "regex"


@dataclass(frozen=True, slots=True)
class Specificity:
    priority: int
    weight: int
    fixed_length: bool
    structural: bool  # False for regular expressions

    def key(self) -> tuple[int, int, bool, bool]:
        return (self.priority, self.weight, self.fixed_length, self.structural)


@dataclass(frozen=True, slots=True)
class Mask:
    """One compiled mask. Build it with `Mask.parse`."""

    text: str
    kind: MaskKind
    specificity: Specificity
    _prefix: str = field(repr=False, compare=False)
    _regex: re.Pattern[str] | None = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str, priority: int = 0) -> Mask:
        if not text:
            raise MaskError("empty mask")
        if text.startswith("re:"):
            try:
                regex = re.compile(text[3:])
            except re.error as exc:
                raise MaskError(f"invalid regular expression: {exc}") from None
            return cls(text, MaskKind.REGEX, Specificity(priority, 0, False, False), "", regex)
        if text.startswith("="):
            body = text[1:]
            if not body or not all(ch.isdigit() or ch in "*#" for ch in body):
                raise MaskError("an exact mask ('=...') takes digits, '*' and '#' only")
            regex, weight, fixed = _compile_pattern(body)
            return cls(
                text, MaskKind.PATTERN, Specificity(priority, weight, fixed, True), "", regex
            )
        if all(ch.isdigit() or ch in "*#" for ch in text):
            return cls(
                text, MaskKind.PREFIX, Specificity(priority, 9 * len(text), False, True), text, None
            )
        regex, weight, fixed = _compile_pattern(text)
        return cls(text, MaskKind.PATTERN, Specificity(priority, weight, fixed, True), "", regex)

    def matches(self, digits: str) -> bool:
        if self._regex is None:
            return digits.startswith(self._prefix)
        if self.kind is MaskKind.REGEX:
            return self._regex.search(digits) is not None
        return self._regex.fullmatch(digits) is not None


def _compile_pattern(text: str) -> tuple[re.Pattern[str], int, bool]:
    """Translate a digit pattern to a regex; return it with its weight and fixed-length flag."""
    parts: list[str] = []
    weight = 0
    fixed = True
    index = 0
    while index < len(text):
        ch = text[index]
        if ch.isdigit() or ch in "*#":
            parts.append(re.escape(ch))
            weight += 9
        elif ch in _WILDCARDS:
            parts.append(_WILDCARDS[ch])
            weight += 10 - _WILDCARD_SIZES[ch]
        elif ch == "[":
            end = text.find("]", index)
            if end == -1:
                raise MaskError(f"unclosed '[' at position {index} in {text!r}")
            digits = _expand_set(text[index + 1 : end], text, index)
            parts.append("[" + "".join(sorted(digits)) + "]")
            weight += 10 - len(digits)
            index = end
        elif ch == ".":
            if index != len(text) - 1:
                raise MaskError(f"'.' may only end a pattern (position {index} in {text!r})")
            parts.append("[0-9*#]+")
            fixed = False
        else:
            raise MaskError(f"unexpected {ch!r} at position {index} in {text!r}")
        index += 1
    return re.compile("".join(parts)), weight, fixed


def _expand_set(body: str, text: str, at: int) -> set[str]:
    digits: set[str] = set()
    pos = 0
    while pos < len(body):
        ch = body[pos]
        if not ch.isdigit():
            raise MaskError(f"only digits and ranges go inside [...] (position {at} in {text!r})")
        if pos + 2 < len(body) and body[pos + 1] == "-":
            last = body[pos + 2]
            if not last.isdigit() or last < ch:
                raise MaskError(f"bad range {ch}-{last} at position {at} in {text!r}")
            digits.update(str(d) for d in range(int(ch), int(last) + 1))
            pos += 3
        else:
            digits.add(ch)
            pos += 1
    if not digits:
        raise MaskError(f"empty [] at position {at} in {text!r}")
    return digits


@dataclass(frozen=True, slots=True)
class MaskMatch(Generic[_Payload]):
    mask: Mask
    payload: _Payload


class MaskMatcher(Generic[_Payload]):
    """Picks the most specific of several masks that match a number (rule in module doc)."""

    __slots__ = ("_ordered",)

    def __init__(self, entries: Iterable[tuple[Mask, _Payload]]) -> None:
        indexed = list(enumerate(entries))
        # Sort once by descending specificity, declaration order breaking ties, so a lookup
        # is a scan that stops at the first hit.
        indexed.sort(key=lambda item: (tuple(-v for v in item[1][0].specificity.key()), item[0]))
        self._ordered: tuple[MaskMatch[_Payload], ...] = tuple(
            MaskMatch(mask, payload) for _, (mask, payload) in indexed
        )

    def match(self, digits: str) -> MaskMatch[_Payload] | None:
        for entry in self._ordered:
            if entry.mask.matches(digits):
                return entry
        return None

    def match_all(self, digits: str) -> Sequence[MaskMatch[_Payload]]:
        """Every matching mask, most specific first."""
        return [entry for entry in self._ordered if entry.mask.matches(digits)]

    def __len__(self) -> int:
        return len(self._ordered)
