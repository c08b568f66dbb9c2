"""Signal levels in dBm0 for 16-bit linear audio on a G.711 path.

0 dBm0 is the level of the ITU "digital milliwatt" (G.711 Tables 5 and 6): a 1 kHz sine whose
peak is 3.14 dB below the A-law overload point. In our int16 scale that overload is 32768, so
a 0 dBm0 sine peaks at about 22,8xx. (mu-law's overload is 3.17 dB above 0 dBm0; the 0.03 dB
difference does not matter for the thresholds here.)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

OVERLOAD_DB_ABOVE_0DBM0 = 3.14
FULL_SCALE = 32768.0
ZERO_DBM0_PEAK = FULL_SCALE * 10 ** (-OVERLOAD_DB_ABOVE_0DBM0 / 20)
# Mean-square power of a 0 dBm0 sine (peak^2 / 2), in int16 units squared.
ZERO_DBM0_POWER = ZERO_DBM0_PEAK**2 / 2


def sine_peak(level_dbm0: float) -> float:
    """Peak amplitude of a sine at ``level_dbm0``."""
    return float(ZERO_DBM0_PEAK * 10 ** (level_dbm0 / 20))


def power_to_dbm0(mean_square: float) -> float:
    """Level in dBm0 of a signal with this mean-square power (-inf for silence)."""
    if mean_square <= 0:
        return float("-inf")
    return float(10 * np.log10(mean_square / ZERO_DBM0_POWER))


def dbm0_to_power(level_dbm0: float) -> float:
    return float(ZERO_DBM0_POWER * 10 ** (level_dbm0 / 10))


def signal_level_dbm0(samples: npt.ArrayLike) -> float:
    x = np.asarray(samples, dtype=np.float64)
    return power_to_dbm0(float(np.mean(x * x))) if x.size else float("-inf")
