from __future__ import annotations

import numpy as np
import pytest
from callmesh_media.dsp.analysis import dominant_frequency
from callmesh_media.dsp.g711 import ulaw_decode
from callmesh_media.dsp.levels import ZERO_DBM0_PEAK, signal_level_dbm0, sine_peak
from callmesh_media.dsp.tones import RINGBACK_EU, ToneGenerator, dtmf_frequencies, tone


def test_zero_dbm0_matches_the_digital_milliwatt() -> None:
    # G.711's digital milliwatt is the mu-law sequence 1E 0B 0B 1E 9E 8B 8B 9E repeated:
    # a 1 kHz sine at 0 dBm0. Decoded, it must measure 0 dBm0 (within its quantisation).
    milliwatt = ulaw_decode(bytes.fromhex("1e0b0b1e9e8b8b9e") * 1000)
    assert dominant_frequency(milliwatt) == pytest.approx(1000.0, abs=0.5)
    assert signal_level_dbm0(milliwatt) == pytest.approx(0.0, abs=0.1)
    assert sine_peak(-20.0) == pytest.approx(ZERO_DBM0_PEAK / 10)


def test_single_and_dual_tones_have_their_levels_and_frequencies() -> None:
    single = tone([425.0], -10.0, 1.0)
    assert signal_level_dbm0(single) == pytest.approx(-10.0, abs=0.01)
    assert dominant_frequency(single) == pytest.approx(425.0, abs=0.5)
    dual = tone([350.0, 440.0], [-13.0, -16.0], 1.0)
    expected = 10 * np.log10(10 ** (-1.3) + 10 ** (-1.6))
    assert signal_level_dbm0(dual) == pytest.approx(expected, abs=0.01)
    with pytest.raises(ValueError):
        dtmf_frequencies("E")


def test_generator_is_phase_continuous_and_follows_its_cadence() -> None:
    frames = ToneGenerator([425.0], -10.0, RINGBACK_EU)
    whole = ToneGenerator([425.0], -10.0, RINGBACK_EU).read(8000 * 10)
    pieces = np.concatenate([frames.read(160) for _ in range(500)])
    assert np.allclose(pieces, whole)  # frame-by-frame equals one long read: no clicks
    on = np.abs(whole.reshape(-1, 800)).max(axis=1) > 0  # 100 ms resolution
    # 1 s on, 4 s off, twice.
    assert on.tolist() == ([True] * 10 + [False] * 40) * 2
