"""Signal analysis used to check audio (tests, interop checks, diagnostics).

``dominant_frequency`` and ``tone_snr_db`` look at a whole signal with a windowed FFT; they
are for verifying that a tone survived a path (codec, transcoding, mixing, resampling), not
for real-time use.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _spectrum(
    samples: npt.ArrayLike, rate: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    x = np.asarray(samples, dtype=np.float64)
    window = np.hanning(len(x))
    power = np.abs(np.fft.rfft(x * window)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    return np.asarray(freqs, dtype=np.float64), np.asarray(power, dtype=np.float64)


def dominant_frequency(samples: npt.ArrayLike, rate: int = 8000) -> float:
    """Frequency of the strongest spectral peak (parabolic interpolation between bins)."""
    freqs, power = _spectrum(samples, rate)
    power[0] = 0.0  # ignore DC
    k = int(np.argmax(power))
    if 0 < k < len(power) - 1:
        a, b, c = np.log(power[k - 1 : k + 2] + 1e-30)
        offset = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    else:
        offset = 0.0
    return float((k + offset) * (freqs[1] - freqs[0]))


def band_power_fraction(
    samples: npt.ArrayLike, frequency: float, rate: int = 8000, half_width: float = 30.0
) -> float:
    """Fraction of the signal's power within ``frequency ± half_width`` Hz."""
    freqs, power = _spectrum(samples, rate)
    total = float(power[1:].sum())
    if total == 0.0:
        return 0.0
    band = (freqs >= frequency - half_width) & (freqs <= frequency + half_width)
    return float(power[band].sum() / total)


def tone_snr_db(
    samples: npt.ArrayLike, frequency: float, rate: int = 8000, half_width: float = 30.0
) -> float:
    """Power near ``frequency`` over the power everywhere else, in dB."""
    fraction = band_power_fraction(samples, frequency, rate, half_width)
    if fraction >= 1.0:
        return float("inf")
    if fraction <= 0.0:
        return float("-inf")
    return float(10 * np.log10(fraction / (1.0 - fraction)))


def snr_against_reference(reference: npt.ArrayLike, degraded: npt.ArrayLike) -> float:
    """SNR in dB of ``degraded`` against the exact ``reference`` (same length, aligned)."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(degraded, dtype=np.float64)
    noise = float(np.sum((out - ref) ** 2))
    signal = float(np.sum(ref**2))
    return float("inf") if noise == 0 else float(10 * np.log10(signal / noise))
