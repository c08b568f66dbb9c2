"""Digit collection (the ``gather`` verb's media half) as a sans-I/O state machine.

Digits are fed as they are detected, time is passed in; the collector says when it is done
and why. Type-ahead (digits pressed before the request) is fed first unless flushed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CollectResult:
    digits: str
    terminator: str
    end: str  # max_digits, terminator, no_input, inter_digit_timeout, cancelled


class DigitCollector:
    def __init__(
        self,
        collect_id: str,
        *,
        now: float,
        min_digits: int = 1,
        max_digits: int = 0,
        terminators: str = "",
        first_digit_timeout: float = 5.0,
        inter_digit_timeout: float = 3.0,
    ) -> None:
        self.collect_id = collect_id
        self.min_digits = min_digits
        self.max_digits = max_digits
        self.terminators = terminators
        self.first_digit_timeout = first_digit_timeout
        self.inter_digit_timeout = inter_digit_timeout
        self.digits = ""
        self._deadline = now + first_digit_timeout
        self.result: CollectResult | None = None

    def feed(self, digit: str, now: float) -> CollectResult | None:
        if self.result is not None:
            return self.result
        if digit in self.terminators:
            self.result = CollectResult(self.digits, digit, "terminator")
            return self.result
        self.digits += digit
        if self.max_digits and len(self.digits) >= self.max_digits:
            self.result = CollectResult(self.digits, "", "max_digits")
            return self.result
        self._deadline = now + self.inter_digit_timeout
        return None

    def check_timeout(self, now: float) -> CollectResult | None:
        if self.result is None and now >= self._deadline:
            end = "inter_digit_timeout" if self.digits else "no_input"
            self.result = CollectResult(self.digits, "", end)
        return self.result

    def cancel(self) -> CollectResult:
        if self.result is None:
            self.result = CollectResult(self.digits, "", "cancelled")
        return self.result
