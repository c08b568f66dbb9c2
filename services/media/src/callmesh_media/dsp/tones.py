"""Tone generation: single and dual tones, DTMF digits at given dBm0 levels, cadenced tones.

Signals are produced as float64 in int16 scale; :func:`~callmesh_media.dsp.resample.to_int16`
rounds and saturates them for the codecs. :class:`ToneGenerator` keeps phase across frames so
a cadenced call-progress tone (ringback, busy) has no clicks at frame boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callmesh_media.dsp.levels import sine_peak

DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYPAD = ("123A", "456B", "789C", "*0#D")
DTMF_DIGITS = "0123456789*#ABCD"

FloatArray = npt.NDArray[np.float64]


def dtmf_frequencies(digit: str) -> tuple[float, float]:
    """(low group, high group) frequencies of a DTMF digit."""
    key = digit.upper()
    for row, keys in enumerate(DTMF_KEYPAD):
        column = keys.find(key)
        if len(key) == 1 and column >= 0:
            return DTMF_ROWS[row], DTMF_COLUMNS[column]
    raise ValueError(f"{digit!r} is not a DTMF digit")


def tone(
    frequencies: Sequence[float],
    levels_dbm0: Sequence[float] | float,
    duration: float,
    rate: int = 8000,
    start_sample: int = 0,
) -> FloatArray:
    """Sum of sines, each at its own level in dBm0, for ``duration`` seconds."""
    if isinstance(levels_dbm0, int | float):
        levels = [float(levels_dbm0)] * len(frequencies)
    else:
        levels = [float(level) for level in levels_dbm0]
    if len(levels) != len(frequencies):
        raise ValueError("one level per frequency")
    n = np.arange(start_sample, start_sample + round(duration * rate))
    out = np.zeros(len(n))
    for frequency, level in zip(frequencies, levels, strict=True):
        out += sine_peak(level) * np.sin(2 * np.pi * frequency * n / rate)
    return out


def dtmf_tone(
    digit: str,
    duration: float,
    level_dbm0: float = -10.0,
    *,
    twist_db: float = 0.0,
    rate: int = 8000,
) -> FloatArray:
    """A DTMF digit; ``level_dbm0`` is per tone (low group), ``twist_db`` raises the high group."""
    low, high = dtmf_frequencies(digit)
    return tone((low, high), (level_dbm0, level_dbm0 + twist_db), duration, rate)


def dtmf_sequence(
    digits: str,
    *,
    tone_duration: float = 0.08,
    gap: float = 0.08,
    level_dbm0: float = -10.0,
    rate: int = 8000,
) -> FloatArray:
    """Digits separated by silence, with silence before the first and after the last."""
    silence = np.zeros(round(gap * rate))
    parts: list[FloatArray] = [silence]
    for digit in digits:
        parts.append(dtmf_tone(digit, tone_duration, level_dbm0, rate=rate))
        parts.append(silence)
    return np.concatenate(parts)


@dataclass(frozen=True, slots=True)
class Cadence:
    """On/off pattern in seconds, repeated; an empty pattern means continuous."""

    pattern: tuple[float, ...] = ()

    def is_on(self, t: FloatArray) -> npt.NDArray[np.bool_]:
        if not self.pattern:
            return np.ones(t.shape, dtype=bool)
        period = sum(self.pattern)
        phase = np.mod(t, period)
        on = np.zeros(t.shape, dtype=bool)
        edge = 0.0
        for index, length in enumerate(self.pattern):
            if index % 2 == 0:
                on |= (phase >= edge) & (phase < edge + length)
            edge += length
        return on


RINGBACK_EU = Cadence((1.0, 4.0))  # 425 Hz, ETSI/Europe/Russia
BUSY_EU = Cadence((0.5, 0.5))  # 425 Hz in Europe; Russia uses 0.35/0.35


class ToneGenerator:
    """Phase-continuous (optionally cadenced) tone, read frame by frame."""

    def __init__(
        self,
        frequencies: Sequence[float],
        level_dbm0: float,
        cadence: Cadence | None = None,
        rate: int = 8000,
    ) -> None:
        self.frequencies = tuple(frequencies)
        self.peak = sine_peak(level_dbm0)
        self.cadence = cadence or Cadence()
        self.rate = rate
        self._position = 0

    def read(self, samples: int) -> FloatArray:
        n = np.arange(self._position, self._position + samples)
        self._position += samples
        out = np.zeros(samples)
        for frequency in self.frequencies:
            out += self.peak * np.sin(2 * np.pi * frequency * n / self.rate)
        return np.where(self.cadence.is_on(n / self.rate), out, 0.0)
