from __future__ import annotations

import numpy as np
import pytest
from callmesh_media.dsp.analysis import dominant_frequency, snr_against_reference
from callmesh_media.dsp.levels import signal_level_dbm0
from callmesh_media.dsp.resample import resample, to_int16
from callmesh_media.dsp.tones import tone

COMMON_RATES = [11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000]


@pytest.mark.parametrize("rate", COMMON_RATES)
def test_1khz_prompt_tone_arrives_at_8khz_intact(rate: int) -> None:
    source = tone([1000.0], -6.0, 1.0, rate=rate)
    out = resample(source, rate, 8000)
    assert len(out) == 8000
    middle = slice(800, 7200)  # away from the filter's start-up and tail
    ideal = tone([1000.0], -6.0, 1.0, rate=8000)
    assert dominant_frequency(out[middle]) == pytest.approx(1000.0, abs=0.5)
    assert signal_level_dbm0(out[middle]) == pytest.approx(-6.0, abs=0.1)
    # Sample-aligned with the ideal 8 kHz tone: the group delay is compensated.
    assert snr_against_reference(ideal[middle], out[middle]) > 60.0


@pytest.mark.parametrize(("rate", "frequency"), [(48000, 5000.0), (44100, 4500.0), (16000, 6000.0)])
def test_content_above_4khz_does_not_alias_into_the_band(rate: int, frequency: float) -> None:
    out = resample(tone([frequency], 0.0, 1.0, rate=rate), rate, 8000)
    assert signal_level_dbm0(out[800:7200]) < -60.0


def test_telephone_band_edge_passes() -> None:
    out = resample(tone([3300.0], -10.0, 1.0, rate=48000), 48000, 8000)
    assert signal_level_dbm0(out[800:7200]) == pytest.approx(-10.0, abs=0.5)


def test_upsampling_and_identity() -> None:
    source = tone([440.0], -10.0, 0.5)
    up = resample(source, 8000, 16000)
    assert len(up) == 8000
    assert dominant_frequency(up[1000:7000], rate=16000) == pytest.approx(440.0, abs=0.5)
    assert np.array_equal(resample(source, 8000, 8000), source)


def test_int16_conversion_saturates() -> None:
    assert to_int16([40000.0, -40000.0, 1.4, -1.6]).tolist() == [32767, -32768, 1, -2]
    with pytest.raises(ValueError, match="mono"):
        resample(np.zeros((2, 10)), 16000)
