"""Number normalisation (E.164 through `phonenumbers`) and call classification.

A tenant dials in its own country's habits ("8 812 123-45-67" in Russia, "044 123 4567" in
Ukraine); everything downstream (masks, lists, ICM history, LCR) compares E.164 digits, so the
raw string is normalised once, at the edge of the core, with the tenant's default region.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import phonenumbers

# Characters people and phones put between digits; they carry no meaning for routing.
_SEPARATORS = str.maketrans("", "", " -().\u00a0\t")


class NumberClass(IntEnum):
    """How far a call goes; ordered so a permission class allows everything up to itself."""

    INTERNAL = 0
    LOCAL = 1
    LONG_DISTANCE = 2
    INTERNATIONAL = 3


@dataclass(frozen=True, slots=True)
class ResolvedNumber:
    """A dialled or calling number after normalisation.

    `canonical` is "+<E.164 digits>" for outside numbers and the bare short number for
    internal ones; `digits` is what masks, lists and rate tables are keyed by.
    """

    raw: str
    canonical: str
    number_class: NumberClass
    region: str | None

    @property
    def digits(self) -> str:
        return self.canonical.removeprefix("+")

    @property
    def is_internal(self) -> bool:
        return self.number_class is NumberClass.INTERNAL


def strip_separators(raw: str) -> str:
    """Drop spaces, dashes, dots and brackets; keep digits, '+', '*' and '#'."""
    return raw.translate(_SEPARATORS)


@dataclass(frozen=True, slots=True)
class NumberingPlan:
    """One tenant's numbering habits.

    default_region: ISO 3166 alpha-2 code used to read national numbers ("RU", "UA", ...).
    local_prefixes: E.164 digit prefixes (no '+') that count as local calls, e.g. ("7812",) for
        St Petersburg. Empty means the country has no local/long-distance split: every
        domestic number is local.
    max_internal_digits: short numbers (extensions, departments, services) are at most this
        long; anything longer is read as an outside number.
    """

    default_region: str = "RU"
    local_prefixes: tuple[str, ...] = ()
    max_internal_digits: int = 5
    memo_size: int = 65_536
    _home_country_code: int = field(init=False, repr=False, compare=False, default=0)
    _memo: dict[str, ResolvedNumber | None] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        code = phonenumbers.country_code_for_region(self.default_region)
        if code == 0:
            raise ValueError(f"unknown region {self.default_region!r}")
        object.__setattr__(self, "_home_country_code", code)

    def is_short_number(self, raw: str) -> bool:
        cleaned = strip_separators(raw)
        return (
            0 < len(cleaned) <= self.max_internal_digits
            and not cleaned.startswith("+")
            and all(ch.isdigit() or ch in "*#" for ch in cleaned)
        )

    def resolve(self, raw: str) -> ResolvedNumber | None:
        """Normalise and classify `raw`; None when it is neither a short number nor valid.

        Parsing with phonenumbers costs tens of microseconds, the largest part of a routing
        decision, while the same numbers come back all day (the tenant's DIDs, repeat
        callers, customers called again). The answer depends only on `raw` and this plan,
        so it is memoised; the memo is simply emptied when full, which keeps it bounded
        without bookkeeping on the hot path.
        """
        try:
            return self._memo[raw]
        except KeyError:
            pass
        resolved = self._resolve(raw)
        if len(self._memo) >= self.memo_size:
            self._memo.clear()
        self._memo[raw] = resolved
        return resolved

    def _resolve(self, raw: str) -> ResolvedNumber | None:
        cleaned = strip_separators(raw)
        if self.is_short_number(cleaned):
            return ResolvedNumber(raw, cleaned, NumberClass.INTERNAL, None)
        parsed = self._parse_valid(cleaned)
        if parsed is None and cleaned.isdigit():
            # Trunks often send E.164 without the '+'; read nationally first (an "8 812..."
            # Russian number is also bare digits), then as international.
            parsed = self._parse_valid("+" + cleaned)
        if parsed is None:
            return None
        number, region = parsed
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return ResolvedNumber(raw, e164, self._classify(e164, region), region)

    def _parse_valid(self, text: str) -> tuple[phonenumbers.PhoneNumber, str | None] | None:
        try:
            number = phonenumbers.parse(text, self.default_region)
        except phonenumbers.NumberParseException:
            return None
        # What `is_valid_number` does, keeping the region it finds instead of looking it up
        # a second time.
        region = phonenumbers.region_code_for_number(number)
        if region is None or not phonenumbers.is_valid_number_for_region(number, region):
            return None
        return number, region

    def to_e164(self, raw: str) -> str | None:
        """E.164 ("+7812...") for an outside number, None for short or invalid ones."""
        resolved = self.resolve(raw)
        if resolved is None or resolved.is_internal:
            return None
        return resolved.canonical

    def _classify(self, e164: str, region: str | None) -> NumberClass:
        # Country calling codes are shared (+7 is Russia and Kazakhstan), so compare regions,
        # falling back to the calling code for non-geographic numbers.
        if region != self.default_region and not (
            region in (None, "001") and e164.startswith(f"+{self._home_country_code}")
        ):
            return NumberClass.INTERNATIONAL
        if not self.local_prefixes:
            return NumberClass.LOCAL
        digits = e164[1:]
        if any(digits.startswith(prefix) for prefix in self.local_prefixes):
            return NumberClass.LOCAL
        return NumberClass.LONG_DISTANCE
