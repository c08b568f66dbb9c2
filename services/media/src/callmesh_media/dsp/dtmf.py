"""In-band DTMF detection with Goertzel power measurements on 8 kHz audio.

Audio is cut into 102-sample blocks (12.75 ms: long enough to separate 697 from 770 Hz, short
enough that a 40 ms digit covers two whole blocks). Each block gives a hit if all of these
hold (the usual checks; the thresholds live in :class:`DtmfThresholds`):

* the strongest low-group and high-group tones are both above ``min_tone_level_dbm0``;
* twist: the high group may be at most ``max_reverse_twist_db`` above the low group, and at
  most ``max_normal_twist_db`` below it (lines attenuate high frequencies, hence the asymmetry);
* each chosen tone beats the others of its group by ``min_peak_ratio_db``;
* the high-group tone's second harmonic is at least ``min_harmonic_rejection_db`` below it
  (voice is rich in harmonics, a DTMF tone is not);
* the two tones hold at least ``min_energy_fraction`` of the block's energy (speech and noise
  spread theirs across the band).

A digit is reported when the same hit is seen in ``min_on_blocks`` consecutive blocks, and
only once: the digit ends after ``min_off_blocks`` blocks without it, so one noisy block in
the middle of a press does not produce a second digit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callmesh_media.dsp.goertzel import block_powers, tone_powers
from callmesh_media.dsp.levels import dbm0_to_power
from callmesh_media.dsp.tones import DTMF_COLUMNS, DTMF_KEYPAD, DTMF_ROWS

BLOCK_SIZE = 102
# Low group, high group, then the high group's second harmonics. The low group's harmonics
# (1394..1882 Hz) fall among the high-group tones themselves, so a 12.75 ms block cannot
# measure them apart from the high tone that is present; they are not checked.
_FREQUENCIES = (
    *DTMF_ROWS,
    *DTMF_COLUMNS,
    *(2 * f for f in DTMF_COLUMNS),
)


@dataclass(frozen=True, slots=True)
class DtmfDetection:
    digit: str
    start_sample: int  # position of the first block that saw it, from the detector's start


@dataclass(frozen=True, slots=True)
class DtmfDigitEnded:
    digit: str
    start_sample: int
    end_sample: int


DtmfNotice = DtmfDetection | DtmfDigitEnded


def _db(value: float) -> float:
    return float(10 ** (value / 10))


@dataclass(frozen=True, slots=True)
class DtmfThresholds:
    """The per-block checks; stateless, so one instance can classify blocks of many channels."""

    min_tone_level_dbm0: float = -32.0
    max_normal_twist_db: float = 8.0
    max_reverse_twist_db: float = 6.0
    min_peak_ratio_db: float = 6.0
    min_harmonic_rejection_db: float = 6.0
    min_energy_fraction: float = 0.6

    def classify(self, blocks: npt.NDArray[np.float64]) -> list[str | None]:
        """Per 102-sample block, the digit its tones satisfy every check for, or None."""
        if len(blocks) == 0:
            return []
        powers = tone_powers(blocks, _FREQUENCIES)
        energy = block_powers(blocks)
        rows, columns = powers[:, 0:4], powers[:, 4:8]
        r = np.argmax(rows, axis=1)
        c = np.argmax(columns, axis=1)
        index = np.arange(len(blocks))
        row_power = rows[index, r]
        column_power = columns[index, c]
        # The strongest of the *other* tones in each group, for the peak-ratio check.
        other_rows = np.sort(rows, axis=1)[:, -2]
        other_columns = np.sort(columns, axis=1)[:, -2]
        ok = (row_power >= dbm0_to_power(self.min_tone_level_dbm0)) & (
            column_power >= dbm0_to_power(self.min_tone_level_dbm0)
        )
        ok &= column_power <= row_power * _db(self.max_reverse_twist_db)
        ok &= row_power <= column_power * _db(self.max_normal_twist_db)
        ok &= row_power >= other_rows * _db(self.min_peak_ratio_db)
        ok &= column_power >= other_columns * _db(self.min_peak_ratio_db)
        harmonic = _db(self.min_harmonic_rejection_db)
        ok &= column_power >= powers[index, 8 + c] * harmonic
        ok &= (row_power + column_power) >= self.min_energy_fraction * energy
        hits: list[str | None] = [None] * len(blocks)
        for i in np.flatnonzero(ok).tolist():
            hits[i] = DTMF_KEYPAD[int(r[i])][int(c[i])]
        return hits


class DtmfDetector:
    """One channel's detector: the block framing and the once-per-press state machine."""

    def __init__(
        self,
        *,
        rate: int = 8000,
        thresholds: DtmfThresholds | None = None,
        min_on_blocks: int = 2,
        min_off_blocks: int = 2,
    ) -> None:
        if rate != 8000:
            raise ValueError("the DTMF detector runs on 8 kHz audio; resample first")
        self.thresholds = thresholds or DtmfThresholds()
        self.min_on_blocks = min_on_blocks
        self.min_off_blocks = min_off_blocks
        self._pending = np.zeros(0, dtype=np.float64)
        self._position = 0  # samples consumed into whole blocks so far
        self._candidate: str | None = None
        self._candidate_count = 0
        self._candidate_start = 0
        self._current: str | None = None
        self._current_start = 0
        self._misses = 0

    @property
    def current_digit(self) -> str | None:
        return self._current

    def process(self, samples: npt.ArrayLike) -> list[DtmfNotice]:
        """Feed any number of samples (int16 or float); returns what became known."""
        blocks = self.take_blocks(samples)
        return self.consume(self.thresholds.classify(blocks))

    def take_blocks(self, samples: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Append samples and return the whole blocks now available (the rest waits)."""
        x = np.asarray(samples, dtype=np.float64)
        data = np.concatenate([self._pending, x]) if self._pending.size else x
        whole = (len(data) // BLOCK_SIZE) * BLOCK_SIZE
        self._pending = data[whole:].copy()
        return data[:whole].reshape(-1, BLOCK_SIZE)

    def consume(self, hits: list[str | None]) -> list[DtmfNotice]:
        """Advance the state machine over classified blocks, in order."""
        notices: list[DtmfNotice] = []
        for hit in hits:
            self._step(hit, notices)
            self._position += BLOCK_SIZE
        return notices

    def _step(self, hit: str | None, notices: list[DtmfNotice]) -> None:
        if hit is not None and hit == self._current:
            self._misses = 0
            self._candidate = None
            self._candidate_count = 0
            return
        if hit is None:
            self._candidate = None
            self._candidate_count = 0
        elif hit == self._candidate:
            self._candidate_count += 1
        else:
            self._candidate = hit
            self._candidate_count = 1
            self._candidate_start = self._position
        if self._current is not None:
            self._misses += 1
            # A different digit that is already confirmed also ends the current one.
            confirmed_other = hit is not None and self._candidate_count >= self.min_on_blocks
            if self._misses >= self.min_off_blocks or confirmed_other:
                notices.append(
                    DtmfDigitEnded(
                        self._current,
                        self._current_start,
                        self._position - (self._misses - 1) * BLOCK_SIZE,
                    )
                )
                self._current = None
                self._misses = 0
        if (
            self._current is None
            and self._candidate is not None
            and self._candidate_count >= self.min_on_blocks
        ):
            self._current = self._candidate
            self._current_start = self._candidate_start
            self._misses = 0
            notices.append(DtmfDetection(self._current, self._current_start))


def detect_many(
    detectors: Sequence[DtmfDetector], chunks: Sequence[npt.ArrayLike]
) -> list[list[DtmfNotice]]:
    """Run many channels' detectors over one tick of audio with a single batched measurement.

    All detectors must share the same thresholds (they are classified together).
    """
    if not detectors:
        return []
    thresholds = detectors[0].thresholds
    if any(d.thresholds != thresholds for d in detectors):
        raise ValueError("detect_many needs detectors that share their thresholds")
    per_channel = [d.take_blocks(c) for d, c in zip(detectors, chunks, strict=True)]
    hits = thresholds.classify(np.concatenate(per_channel))
    notices: list[list[DtmfNotice]] = []
    offset = 0
    for detector, blocks in zip(detectors, per_channel, strict=True):
        notices.append(detector.consume(hits[offset : offset + len(blocks)]))
        offset += len(blocks)
    return notices
