from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from callmesh_media.dsp import g711
from callmesh_media.dsp.fax import FaxToneDetected, FaxToneDetector
from callmesh_media.dsp.levels import dbm0_to_power
from callmesh_media.dsp.resample import to_int16
from callmesh_media.dsp.tones import Cadence, ToneGenerator, dtmf_sequence, tone

RATE = 8000


def run(signal: npt.ArrayLike, chunk: int = 160) -> list[FaxToneDetected]:
    detector = FaxToneDetector()
    x = np.asarray(signal)
    found: list[FaxToneDetected] = []
    for start in range(0, len(x), chunk):
        found += detector.process(x[start : start + chunk])
    return found


def cng(seconds: float, level: float = -15.0, frequency: float = 1100.0) -> npt.NDArray[np.float64]:
    generator = ToneGenerator([frequency], level, Cadence((0.5, 3.0)))
    return generator.read(round(seconds * RATE))


def noisy(
    signal: npt.NDArray[np.float64], noise_dbm0: float, seed: int = 0
) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    return signal + rng.normal(0, np.sqrt(dbm0_to_power(noise_dbm0)), len(signal))


def test_cng_cadence_is_reported_once_after_the_first_burst() -> None:
    signal = np.concatenate([np.zeros(RATE), cng(8.0)])  # 1 s of silence, then the fax calls
    received = g711.alaw_decode(g711.alaw_encode(to_int16(noisy(signal, -45.0))))
    (found,) = run(received)
    assert found.tone == "CNG"
    assert found.start_sample / RATE == pytest.approx(1.0, abs=0.02)
    # Known once the 0.5 s burst has ended and stayed ended for a few blocks.
    assert found.detected_at_sample / RATE == pytest.approx(1.53, abs=0.03)


@pytest.mark.parametrize("offset", [-35.0, +35.0])
def test_cng_within_frequency_tolerance(offset: float) -> None:
    (found,) = run(cng(4.0, level=-20.0, frequency=1100.0 + offset))
    assert found.tone == "CNG"


def test_ced_reported_once_before_the_tone_ends() -> None:
    signal = np.concatenate([np.zeros(4000), tone([2100.0], -12.0, 3.3), np.zeros(8000)])
    (found,) = run(noisy(signal, -45.0))
    assert found.tone == "CED"
    assert found.start_sample / RATE == pytest.approx(0.5, abs=0.02)
    assert (found.detected_at_sample - found.start_sample) / RATE == pytest.approx(0.7, abs=0.02)


def test_things_that_are_not_fax_tones() -> None:
    assert run(tone([1100.0], -10.0, 2.0)) == []  # continuous 1100 Hz: too long for CNG
    assert run(tone([1100.0], -10.0, 0.2)) == []  # a short beep: too short for CNG
    assert run(tone([2100.0], -10.0, 0.4)) == []  # a short 2100 Hz beep is not CED
    assert run(tone([1000.0], -10.0, 5.0)) == []
    assert run(tone([2100.0, 1100.0], -10.0, 3.0)) == []  # neither dominates
    assert run(dtmf_sequence("0123456789", level_dbm0=-10.0)) == []
    assert run(noisy(np.zeros(5 * RATE), -20.0)) == []
    assert run(tone([2100.0], -50.0, 3.0)) == []  # below the detection level


def test_reset_rearms_the_detector() -> None:
    detector = FaxToneDetector()
    burst = np.concatenate([np.zeros(800), tone([1100.0], -10.0, 0.5), np.zeros(8000)])
    assert [f.tone for f in detector.process(burst)] == ["CNG"]
    assert detector.process(burst) == []
    detector.reset()
    assert [f.tone for f in detector.process(burst)] == ["CNG"]
