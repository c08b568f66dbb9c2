"""Fax tone detection: CNG (calling, 1100 Hz) and CED (answering, 2100 Hz), on 8 kHz audio.

* CNG is 1100 Hz ±38 Hz, 0.5 s on / 3 s off (T.30). We report it when one burst of the right
  length has ended (``cng_min_on``..``cng_max_on``); a continuous 1100 Hz tone or a short beep
  in a prompt does not qualify. One burst (0.5 s, then the silence that ends it) is the
  earliest that can tell a fax from an 1100 Hz tone; waiting for a second burst costs 3.5 s.
* CED (and the V.25 ANS a modem sends) is 2100 Hz ±15 Hz for 2.6 to 4 s. We report it once the
  tone has been continuous for ``ced_min_on`` (0.7 s by default): long enough to rule out
  speech and music, well before the tone ends, so the call can be switched to fax handling.

Audio is measured in 10 ms blocks: short blocks give a wide measuring bandwidth, which is
what the ±38 Hz CNG tolerance needs. Each report is made once; :meth:`reset` re-arms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from callmesh_media.dsp.goertzel import block_powers, tone_powers
from callmesh_media.dsp.levels import dbm0_to_power

BLOCK_SIZE = 80
CNG_FREQUENCY = 1100.0
CED_FREQUENCY = 2100.0


@dataclass(frozen=True, slots=True)
class FaxToneDetected:
    tone: Literal["CNG", "CED"]
    start_sample: int
    detected_at_sample: int


class FaxToneDetector:
    def __init__(
        self,
        *,
        rate: int = 8000,
        min_level_dbm0: float = -43.0,
        min_energy_fraction: float = 0.5,
        cng_min_on: float = 0.35,
        cng_max_on: float = 0.8,
        ced_min_on: float = 0.7,
        max_dropout_blocks: int = 2,
    ) -> None:
        if rate != 8000:
            raise ValueError("the fax tone detector runs on 8 kHz audio; resample first")
        self.min_power = dbm0_to_power(min_level_dbm0)
        self.min_energy_fraction = min_energy_fraction
        block_time = BLOCK_SIZE / rate
        self.cng_min_blocks = round(cng_min_on / block_time)
        self.cng_max_blocks = round(cng_max_on / block_time)
        self.ced_min_blocks = round(ced_min_on / block_time)
        self.max_dropout_blocks = max_dropout_blocks
        self._pending = np.zeros(0)
        self._position = 0
        self.reset()

    def reset(self) -> None:
        self.cng_reported = False
        self.ced_reported = False
        self._cng = _ToneRun()
        self._ced = _ToneRun()

    def process(self, samples: npt.ArrayLike) -> list[FaxToneDetected]:
        x = np.asarray(samples, dtype=np.float64)
        data = np.concatenate([self._pending, x]) if self._pending.size else x
        whole = (len(data) // BLOCK_SIZE) * BLOCK_SIZE
        self._pending = data[whole:].copy()
        if whole == 0:
            return []
        blocks = data[:whole].reshape(-1, BLOCK_SIZE)
        powers = tone_powers(blocks, (CNG_FREQUENCY, CED_FREQUENCY))
        energy = block_powers(blocks)
        present = (powers >= self.min_power) & (
            powers >= self.min_energy_fraction * energy[:, None]
        )
        found: list[FaxToneDetected] = []
        for cng_present, ced_present in present.tolist():
            self._step_cng(cng_present, found)
            self._step_ced(ced_present, found)
            self._position += BLOCK_SIZE
        return found

    def _step_cng(self, present: bool, found: list[FaxToneDetected]) -> None:
        burst = self._cng.advance(present, self._position, self.max_dropout_blocks)
        if (
            burst is not None
            and not self.cng_reported
            and self.cng_min_blocks <= burst <= self.cng_max_blocks
        ):
            self.cng_reported = True
            found.append(FaxToneDetected("CNG", self._cng.last_start, self._position))

    def _step_ced(self, present: bool, found: list[FaxToneDetected]) -> None:
        self._ced.advance(present, self._position, self.max_dropout_blocks)
        if present and not self.ced_reported and self._ced.length >= self.ced_min_blocks:
            self.ced_reported = True
            found.append(FaxToneDetected("CED", self._ced.start, self._position + BLOCK_SIZE))


@dataclass(slots=True)
class _ToneRun:
    """One tone's current burst, in blocks; short dropouts inside a burst count as tone."""

    length: int = 0  # blocks from the burst's first to its latest tone block
    missing: int = 0  # blocks without tone since the latest tone block
    start: int = 0  # sample position of the burst's first block
    last_start: int = 0  # start of the burst that just ended

    def advance(self, present: bool, position: int, max_dropout: int) -> int | None:
        """Account for one block; returns a finished burst's length when one ends."""
        if present:
            if self.length == 0:
                self.start = position
            self.length += 1 + self.missing
            self.missing = 0
            return None
        if self.length == 0:
            return None
        self.missing += 1
        if self.missing <= max_dropout:
            return None
        finished = self.length
        self.last_start = self.start
        self.length = self.missing = 0
        return finished
