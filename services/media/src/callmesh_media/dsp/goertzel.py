"""Single-frequency power measurement (what the Goertzel algorithm computes), batched.

The Goertzel recursion evaluates one DFT term at an arbitrary frequency. Its result equals
``|sum x[n] e^{-j 2 pi f n / fs}|^2``; numpy computes that sum for many blocks and many
frequencies at once as one matrix product, which is far faster than running the recursion
sample by sample in Python. (The tests check the two agree.)

Powers are normalised to the mean-square power of a sine at that frequency: a sine of peak
``A`` exactly at ``f`` measures ``A**2 / 2``, the same scale as the block's mean square, so the
ratio "tone power / block power" is directly the fraction of energy in that tone.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@lru_cache(maxsize=32)
def _basis(block_size: int, frequencies: tuple[float, ...], rate: int) -> FloatArray:
    """Cosines then sines, (N, 2F): a real matrix product is cheaper than a complex one."""
    n = np.arange(block_size)[:, None]
    angle = 2 * np.pi * np.asarray(frequencies)[None, :] * n / rate
    basis = np.concatenate([np.cos(angle), np.sin(angle)], axis=1)
    basis.flags.writeable = False
    return basis


def tone_powers(
    blocks: npt.ArrayLike, frequencies: tuple[float, ...], rate: int = 8000
) -> FloatArray:
    """Power at each frequency for each block: input (..., N) samples, output (..., F)."""
    x = np.asarray(blocks, dtype=np.float64)
    size = x.shape[-1]
    projections = x @ _basis(size, frequencies, rate)
    count = len(frequencies)
    squared = projections * projections
    power = 2.0 * (squared[..., :count] + squared[..., count:]) / (size * size)
    return np.asarray(power, dtype=np.float64)


def block_powers(blocks: npt.ArrayLike) -> FloatArray:
    """Mean-square power of each block (..., N) -> (...)."""
    x = np.asarray(blocks, dtype=np.float64)
    return np.asarray(np.mean(x * x, axis=-1), dtype=np.float64)


def goertzel_power(samples: npt.ArrayLike, frequency: float, rate: int = 8000) -> float:
    """The classic recursion, for one block and one frequency (reference and small uses)."""
    x = np.asarray(samples, dtype=np.float64)
    coefficient = 2.0 * np.cos(2.0 * np.pi * frequency / rate)
    s_prev = s_prev2 = 0.0
    for value in x.tolist():
        s = value + coefficient * s_prev - s_prev2
        s_prev2, s_prev = s_prev, s
    power = s_prev2 * s_prev2 + s_prev * s_prev - coefficient * s_prev * s_prev2
    return float(2.0 * power / (len(x) * len(x)))
