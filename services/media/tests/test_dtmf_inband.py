from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from callmesh_media.dsp import g711
from callmesh_media.dsp.dtmf import (
    DtmfDetection,
    DtmfDetector,
    DtmfDigitEnded,
    DtmfThresholds,
    detect_many,
)
from callmesh_media.dsp.goertzel import goertzel_power, tone_powers
from callmesh_media.dsp.levels import dbm0_to_power, signal_level_dbm0
from callmesh_media.dsp.resample import to_int16
from callmesh_media.dsp.tones import DTMF_DIGITS, dtmf_frequencies, dtmf_sequence, dtmf_tone, tone
from callmesh_media.rtp import RtpPacket

FloatArray = npt.NDArray[np.float64]


def detect(
    signal: npt.ArrayLike, chunk: int = 160, thresholds: DtmfThresholds | None = None
) -> str:
    """Run the detector over 8 kHz audio fed like RTP frames; the digits it reported."""
    detector = DtmfDetector(thresholds=thresholds)
    x = np.asarray(signal)
    digits = []
    for start in range(0, len(x), chunk):
        for notice in detector.process(x[start : start + chunk]):
            if isinstance(notice, DtmfDetection):
                digits.append(notice.digit)
    return "".join(digits)


def with_noise(
    signal: FloatArray, snr_db: float, rng: np.random.Generator, reference_power: float
) -> FloatArray:
    noise_power = reference_power / 10 ** (snr_db / 10)
    return signal + rng.normal(0.0, np.sqrt(noise_power), len(signal))


def test_batched_power_equals_the_goertzel_recursion() -> None:
    rng = np.random.default_rng(0)
    block = rng.normal(0, 3000, 102)
    frequencies = (697.0, 1209.0, 1633.0, 2100.0)
    batched = tone_powers(block[None, :], frequencies)[0]
    for frequency, power in zip(frequencies, batched, strict=True):
        assert power == pytest.approx(goertzel_power(block, frequency), rel=1e-9)


def test_dtmf_generator_levels_and_frequencies() -> None:
    assert dtmf_frequencies("5") == (770.0, 1336.0)
    assert dtmf_frequencies("d") == (941.0, 1633.0)
    signal = dtmf_tone("#", 1.0, -10.0)
    # Two tones of -10 dBm0 each: -7 dBm0 together.
    assert signal_level_dbm0(signal) == pytest.approx(-10 + 10 * np.log10(2), abs=0.01)
    powers = tone_powers(signal[None, :8000], (941.0, 1477.0))[0]
    assert powers == pytest.approx([dbm0_to_power(-10.0)] * 2, rel=0.01)


@pytest.mark.parametrize("level", [-10.0, -15.0, -20.0, -25.0])
def test_all_sixteen_digits_in_band_with_noise_none_doubled(level: float) -> None:
    rng = np.random.default_rng(int(-level))
    signal = dtmf_sequence(DTMF_DIGITS * 2, tone_duration=0.05, gap=0.05, level_dbm0=level)
    noisy = with_noise(signal, 20.0, rng, reference_power=2 * dbm0_to_power(level))
    # Through a real PCMU path, as a phone sending in-band tones would reach us.
    received = g711.ulaw_decode(g711.ulaw_encode(to_int16(noisy)))
    assert detect(received) == DTMF_DIGITS * 2


@pytest.mark.parametrize("twist", [-6.0, +4.0])
def test_digits_with_twist_within_limits(twist: float) -> None:
    rng = np.random.default_rng(3)
    parts = [np.zeros(400)]
    for digit in DTMF_DIGITS:
        parts += [dtmf_tone(digit, 0.06, -15.0, twist_db=twist), np.zeros(400)]
    signal = with_noise(np.concatenate(parts), 25.0, rng, 2 * dbm0_to_power(-15.0))
    assert detect(signal) == DTMF_DIGITS


@pytest.mark.parametrize(
    ("deviation", "accepted"), [(0.015, True), (-0.015, True), (0.035, False), (-0.035, False)]
)
def test_frequency_tolerance(deviation: float, accepted: bool) -> None:
    # Q.24-style limits: tones within 1.5% must be accepted, tones 3.5% off rejected.
    for digit in DTMF_DIGITS:
        low, high = dtmf_frequencies(digit)
        signal = np.concatenate(
            [
                np.zeros(400),
                tone([low * (1 + deviation), high * (1 + deviation)], -15.0, 0.08),
                np.zeros(400),
            ]
        )
        assert detect(signal) == (digit if accepted else ""), digit


def test_excessive_twist_and_too_quiet_tones_are_rejected() -> None:
    assert detect(dtmf_tone("1", 0.2, -15.0, twist_db=-12.0)) == ""
    assert detect(dtmf_tone("1", 0.2, -15.0, twist_db=+9.0)) == ""
    assert detect(dtmf_tone("1", 0.2, -40.0)) == ""


def test_fast_dialling_40ms_on_40ms_off_is_complete() -> None:
    signal = dtmf_sequence("0123456789*#ABCD", tone_duration=0.04, gap=0.04, level_dbm0=-20.0)
    for chunk in (160, 80, 333):  # framing must not matter
        assert detect(signal, chunk=chunk) == "0123456789*#ABCD"


def test_blips_of_15ms_never_count_at_any_alignment() -> None:
    for offset in range(0, 102, 7):
        signal = np.concatenate([np.zeros(offset), dtmf_tone("8", 0.015, -10.0), np.zeros(400)])
        assert detect(signal) == ""


def test_one_digit_per_press_despite_a_dropout_inside_it() -> None:
    press = dtmf_tone("9", 0.3, -15.0)
    press[1200:1290] = 0.0  # ~11 ms dropout in the middle (a lost packet concealed as silence)
    detector = DtmfDetector()
    notices = detector.process(np.concatenate([np.zeros(800), press, np.zeros(800)]))
    assert [type(n) for n in notices] == [DtmfDetection, DtmfDigitEnded]
    ended = notices[1]
    assert isinstance(ended, DtmfDigitEnded)
    assert (ended.end_sample - ended.start_sample) / 8000 == pytest.approx(0.3, abs=0.03)


def _speech_like(seconds: float, rng: np.random.Generator) -> FloatArray:
    """Voiced syllables (gliding pitch, vowel formants, harmonics) and fricative noise."""
    rate = 8000
    vowels = [
        (730, 1090, 2440),
        (270, 2290, 3010),
        (300, 870, 2240),
        (530, 1840, 2480),
        (570, 840, 2410),
    ]
    out: list[FloatArray] = []
    while sum(len(p) for p in out) < seconds * rate:
        length = int(rng.uniform(0.12, 0.35) * rate)
        t = np.arange(length) / rate
        if rng.random() < 0.75:
            f0 = rng.uniform(90, 250) * (1 + rng.uniform(-0.2, 0.2) * t / t[-1])
            phase = 2 * np.pi * np.cumsum(f0) / rate
            formants = vowels[rng.integers(len(vowels))]
            syllable = np.zeros(length)
            for k in range(1, 40):
                harmonic_frequency = k * f0.mean()
                if harmonic_frequency > 3800:
                    break
                gain = sum(1.0 / (1 + ((harmonic_frequency - f) / 90.0) ** 2) for f in formants)
                syllable += gain * np.sin(k * phase) / k**0.5
        else:
            syllable = rng.normal(0, 1, length)
            syllable = np.diff(syllable, prepend=0.0)  # brighter, like "s"/"sh"
        envelope = np.sin(np.pi * np.arange(length) / length) ** 0.5
        syllable = syllable * envelope
        syllable *= (
            10 ** (rng.uniform(-25, -8) / 20) * 22_800 / (np.std(syllable) * np.sqrt(2) + 1e-9)
        )
        out += [syllable, np.zeros(int(rng.uniform(0.02, 0.15) * rate))]
    return np.concatenate(out)


def test_no_false_digits_on_speech_like_audio_tones_and_noise() -> None:
    rng = np.random.default_rng(11)
    assert detect(_speech_like(30.0, rng)) == ""
    assert detect(tone([1000.0], -5.0, 3.0)) == ""
    assert detect(tone([350.0, 440.0], -10.0, 3.0)) == ""  # dial tone (North America)
    assert detect(tone([425.0], -5.0, 3.0)) == ""  # dial tone (Europe)
    assert detect(rng.normal(0, 8000, 3 * 8000)) == ""


def test_no_false_digits_on_sipp_recorded_audio(
    sipp_pcap: Callable[[str], list[tuple[float, bytes]]],
) -> None:
    packets = [RtpPacket.parse(data) for _, data in sipp_pcap("g711a.pcap")]
    audio = np.concatenate([g711.alaw_decode(p.payload) for p in packets])
    assert len(audio) > 5 * 8000
    assert detect(audio) == ""


def test_energy_check_is_what_rejects_this_speech() -> None:
    # Guard against the talk-off test passing vacuously: without the energy-fraction check
    # the same synthetic speech does produce a false digit.
    speech = _speech_like(30.0, np.random.default_rng(11))
    assert detect(speech, thresholds=DtmfThresholds(min_energy_fraction=0.0)) != ""


def test_many_channels_in_one_batched_call_match_one_by_one() -> None:
    rng = np.random.default_rng(4)
    channels = [
        dtmf_sequence(digits, tone_duration=0.05, gap=0.05, level_dbm0=-18.0)
        for digits in ("123", "A#0", "9", "")
    ]
    channels[3] = _speech_like(0.9, rng)
    length = max(len(c) for c in channels)
    channels = [np.concatenate([c, np.zeros(length - len(c))]) for c in channels]
    detectors = [DtmfDetector() for _ in channels]
    batched = ["" for _ in channels]
    for start in range(0, length, 160):
        ticks = detect_many(detectors, [c[start : start + 160] for c in channels])
        for i, notices in enumerate(ticks):
            batched[i] += "".join(n.digit for n in notices if isinstance(n, DtmfDetection))
    assert batched == [detect(c) for c in channels] == ["123", "A#0", "9", ""]


def test_detector_insists_on_8khz() -> None:
    with pytest.raises(ValueError, match="8 kHz"):
        DtmfDetector(rate=16000)
