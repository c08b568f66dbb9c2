from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import numpy as np
import pytest
from callmesh_media.dsp import g711
from callmesh_media.dsp.analysis import dominant_frequency, snr_against_reference, tone_snr_db
from callmesh_media.dsp.resample import to_int16
from callmesh_media.dsp.tones import tone
from callmesh_media.rtp import RtpPacket

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


# --- a plain scalar transcription of the ITU-T G.191 reference (STL g711.c) ------------------


def ref_ulaw_compress(x: int) -> int:
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x08 - segno
    low_nibble = 0x0F - ((absno >> segno) & 0x0F)
    out = (high_nibble << 4) | low_nibble
    return out | 0x80 if x >= 0 else out


def ref_alaw_compress(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def ref_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    segment = exponent + 1
    mantissa &= 0x0F
    step = 4 << segment
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


def ref_alaw_expand(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x08
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


def test_encoders_match_the_itu_reference_for_every_int16_sample() -> None:
    samples = ALL_SAMPLES.tolist()
    assert g711.ulaw_encode(ALL_SAMPLES).tolist() == [ref_ulaw_compress(x) for x in samples]
    assert g711.alaw_encode(ALL_SAMPLES).tolist() == [ref_alaw_compress(x) for x in samples]


def test_decoders_match_the_itu_reference_for_every_code() -> None:
    codes = ALL_CODES.tolist()
    assert g711.ulaw_decode(ALL_CODES).tolist() == [ref_ulaw_expand(c) for c in codes]
    assert g711.alaw_decode(ALL_CODES).tolist() == [ref_alaw_expand(c) for c in codes]


def _audioop() -> ModuleType:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module("audioop")
    except ImportError:
        pytest.skip("audioop is not available in this Python")


def test_agreement_with_audioop() -> None:
    audioop = _audioop()
    raw = ALL_SAMPLES.tobytes()
    their_alaw = np.frombuffer(audioop.lin2alaw(raw, 2), dtype=np.uint8)
    their_ulaw = np.frombuffer(audioop.lin2ulaw(raw, 2), dtype=np.uint8)
    assert np.array_equal(g711.alaw_encode(ALL_SAMPLES), their_alaw)
    for decode, name in ((g711.ulaw_decode, "ulaw2lin"), (g711.alaw_decode, "alaw2lin")):
        theirs = np.frombuffer(getattr(audioop, name)(ALL_CODES.tobytes(), 2), dtype=np.int16)
        assert np.array_equal(decode(ALL_CODES), theirs)
    # mu-law encode: audioop follows Sun's g711.c, which negates negative samples where the
    # ITU takes the one's complement. They agree on every non-negative sample; where they
    # differ, the ITU code always decodes at least as close to the input.
    ours = g711.ulaw_encode(ALL_SAMPLES)
    differ = ours != their_ulaw
    assert not differ[ALL_SAMPLES >= 0].any()
    assert 0 < differ.sum() < 0.01 * len(ALL_SAMPLES)
    x = ALL_SAMPLES[differ].astype(np.int64)
    ours_error = np.abs(x - g711.ulaw_decode(ours[differ]))
    their_error = np.abs(x - g711.ulaw_decode(their_ulaw[differ]))
    assert (ours_error <= their_error).all()


def test_codes_survive_decode_then_encode() -> None:
    assert np.array_equal(g711.alaw_encode(g711.alaw_decode(ALL_CODES)), ALL_CODES)
    again = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    # 0x7F is mu-law "negative zero"; it decodes to 0, which encodes as 0xFF.
    assert np.flatnonzero(again != ALL_CODES).tolist() == [0x7F]


def test_double_transcoding_moves_a_code_by_at_most_one_step() -> None:
    there_and_back = g711.ulaw_to_alaw(g711.alaw_to_ulaw(ALL_CODES))
    changed = np.flatnonzero(there_and_back != ALL_CODES)
    assert len(changed) == 16
    before = g711.alaw_decode(ALL_CODES[changed]).astype(np.int64)
    after = g711.alaw_decode(there_and_back[changed]).astype(np.int64)
    levels = np.unique(g711.alaw_decode(ALL_CODES))
    for b, a in zip(before.tolist(), after.tolist(), strict=True):
        low, high = sorted((b, a))
        assert low != high
        assert not np.any((levels > low) & (levels < high))  # adjacent A-law levels


@pytest.mark.parametrize("level", [-3.0, -10.0, -20.0, -30.0])
def test_1khz_tone_through_pcmu_and_through_pcmu_to_pcma(level: float) -> None:
    reference = to_int16(tone([1000.0], level, 1.0))
    via_pcmu = g711.ulaw_decode(g711.ulaw_encode(reference))
    via_pcma = g711.alaw_decode(g711.ulaw_to_alaw(g711.ulaw_encode(reference)))
    back_to_pcmu = g711.ulaw_decode(
        g711.alaw_to_ulaw(g711.ulaw_to_alaw(g711.ulaw_encode(reference)))
    )
    for decoded, min_snr in ((via_pcmu, 33.0), (via_pcma, 30.0), (back_to_pcmu, 28.0)):
        assert dominant_frequency(decoded) == pytest.approx(1000.0, abs=1.0)
        # Companding noise is spread over the band; the tone stays far above it.
        assert snr_against_reference(reference, decoded) > min_snr
        assert tone_snr_db(decoded, 1000.0) > min_snr


def test_batched_frames_and_real_packet_transcoding(sipp_pcma_packets: list[bytes]) -> None:
    packet = RtpPacket.parse(sipp_pcma_packets[0])
    frames = np.stack([g711.alaw_decode(packet.payload)] * 4)
    assert frames.shape == (4, 240)
    assert np.array_equal(g711.alaw_encode(frames)[2], np.frombuffer(packet.payload, np.uint8))
    as_pcmu = g711.transcode(packet.payload, g711.PCMA, g711.PCMU)
    assert len(as_pcmu) == 240
    error = g711.ulaw_decode(as_pcmu).astype(int) - g711.alaw_decode(packet.payload)
    # A transcoded sample lands on the nearest mu-law level: within one mu-law step.
    assert np.all(np.abs(error) <= np.maximum(16, np.abs(g711.alaw_decode(packet.payload)) // 16))
    assert g711.transcode(packet.payload, g711.PCMA, g711.PCMA) == packet.payload


def test_encoder_refuses_other_sample_types() -> None:
    with pytest.raises(TypeError, match="int16"):
        g711.ulaw_encode(np.zeros(160, dtype=np.float64))
    assert g711.codec_by_name("pcma") is g711.PCMA
    assert g711.codec_by_payload_type(0) is g711.PCMU
    assert g711.codec_by_name("opus") is None and g711.codec_by_payload_type(9) is None
    assert g711.PCMU.silence(4) == b"\xff" * 4
    assert g711.PCMA.silence(4) == b"\xd5" * 4
