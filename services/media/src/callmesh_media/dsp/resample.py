"""Rational-ratio resampling with a Kaiser-windowed sinc filter (numpy only).

Used to bring prompts and music (8 to 96 kHz sources) to the 8 kHz the G.711 path runs at.
The filter passes 92.5% of the lower Nyquist band and reaches ~80 dB stopband attenuation at
the lower Nyquist frequency itself, so nothing aliases back into the band audibly: for 8 kHz
output, flat to ~3.4 kHz (the telephone band) and down 80 dB from 4 kHz.
"""

from __future__ import annotations

from functools import lru_cache
from math import ceil, gcd

import numpy as np
import numpy.typing as npt

STOPBAND_ATTENUATION_DB = 80.0
_CHUNK_OUTPUT_SAMPLES = 4096


@lru_cache(maxsize=16)
def _polyphase_filter(up: int, down: int) -> tuple[npt.NDArray[np.float64], int]:
    """Filter taps arranged as (up, taps_per_phase), plus the group delay in upsampled samples."""
    # Normalised to the upsampled rate (1.0 = upsampled sampling frequency).
    lower_nyquist = 0.5 / max(up, down)
    cutoff = 0.925 * lower_nyquist
    transition = 0.15 * lower_nyquist  # full width, centred on the cutoff
    beta = 0.1102 * (STOPBAND_ATTENUATION_DB - 8.7)
    taps = ceil((STOPBAND_ATTENUATION_DB - 7.95) / (2.285 * 2 * np.pi * transition)) + 1
    taps |= 1  # odd length: integer group delay
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, beta)
    h *= up  # zero-stuffing divides the gain by `up`
    per_phase = ceil(taps / up)
    padded = np.zeros(per_phase * up)
    padded[:taps] = h
    # phases[p, m] = h[p + m * up]
    phases = padded.reshape(per_phase, up).T.copy()
    phases.flags.writeable = False
    return phases, (taps - 1) // 2


def resample(
    samples: npt.ArrayLike, from_rate: int, to_rate: int = 8000
) -> npt.NDArray[np.float64]:
    """Resample a mono signal; returns float64 in the input's scale (see :func:`to_int16`)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError("resample expects a mono (1-D) signal")
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError("sample rates must be positive")
    if from_rate == to_rate:
        return x.copy()
    divisor = gcd(from_rate, to_rate)
    up, down = to_rate // divisor, from_rate // divisor
    phases, delay = _polyphase_filter(up, down)
    per_phase = phases.shape[1]
    output_length = ceil(len(x) * up / down)
    # Pad so every tap reads a real index: `per_phase` zeros before, enough after for the delay.
    right_pad = delay // up + 2
    padded = np.concatenate([np.zeros(per_phase), x, np.zeros(right_pad)])
    out = np.empty(output_length)
    offsets = np.arange(per_phase)
    for start in range(0, output_length, _CHUNK_OUTPUT_SAMPLES):
        k = np.arange(start, min(output_length, start + _CHUNK_OUTPUT_SAMPLES), dtype=np.int64)
        position = k * down + delay  # in upsampled samples, delay-compensated
        base = position // up
        phase = position % up
        window = padded[(base + per_phase)[:, None] - offsets[None, :]]
        out[start : start + len(k)] = np.einsum("ij,ij->i", window, phases[phase])
    return out


def to_int16(signal: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Round and saturate to int16 (what the codecs take)."""
    return np.clip(np.rint(np.asarray(signal, dtype=np.float64)), -32768, 32767).astype(np.int16)
