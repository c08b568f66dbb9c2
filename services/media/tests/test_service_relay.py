"""Bridged calls through the real service: tones sent as RTP into one leg, analysed on the
other, with and without PCMU<->PCMA transcoding; RTP bleed protection; SDP errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import pytest
from callmesh.common.v1 import common_pb2
from callmesh.media.v1 import media_pb2 as pb
from callmesh_media.dsp import g711
from callmesh_media.dsp.analysis import dominant_frequency, tone_snr_db
from callmesh_media.dsp.tones import tone

from .harness import MediaService, Phone

OpenPhone = Callable[..., Awaitable[Phone]]


async def _bridged(
    media: MediaService, phones: OpenPhone, codec_a: g711.G711Codec, codec_b: g711.G711Codec
) -> tuple[Phone, Phone, pb.BridgeReply]:
    a = await phones(codec_a)
    b = await phones(codec_b)
    endpoint_a = await media.endpoint_for(a)
    endpoint_b = await media.endpoint_for(b)
    reply = await media.stub.Bridge(pb.BridgeRequest(endpoint_a=endpoint_a, endpoint_b=endpoint_b))
    return a, b, reply


def _check_tone(audio: np.ndarray, frequency: float, min_seconds: float) -> None:
    assert len(audio) >= min_seconds * 8000, f"only {len(audio) / 8000:.2f} s arrived"
    steady = audio[800:]  # skip the first 100 ms
    assert abs(dominant_frequency(steady) - frequency) < 5
    assert tone_snr_db(steady, frequency) > 25


async def test_bridged_legs_hear_each_others_tones(media: MediaService, phones: OpenPhone) -> None:
    a, b, reply = await _bridged(media, phones, g711.PCMU, g711.PCMU)
    assert reply.transcoding is False
    await asyncio.gather(
        a.send_audio(tone([1000.0], -12.0, 1.0)), b.send_audio(tone([600.0], -12.0, 1.0))
    )
    await asyncio.sleep(0.1)
    _check_tone(b.audio(), 1000.0, 0.95)
    _check_tone(a.audio(), 600.0, 0.95)
    # What arrives is one continuous stream per leg: the endpoint's SSRC, consecutive numbers.
    sequences = sorted(r.packet.sequence_number for r in b.received)
    assert len({r.packet.ssrc for r in b.received}) == 1
    assert sequences[-1] - sequences[0] == len(sequences) - 1
    assert {r.source for r in b.received} == {b.media}  # symmetric RTP: from our port


async def test_pcmu_to_pcma_bridge_transcodes(media: MediaService, phones: OpenPhone) -> None:
    a, b, reply = await _bridged(media, phones, g711.PCMU, g711.PCMA)
    assert reply.transcoding is True
    await asyncio.gather(
        a.send_audio(tone([1000.0], -12.0, 1.0)), b.send_audio(tone([440.0], -12.0, 1.0))
    )
    await asyncio.sleep(0.1)
    assert {r.packet.payload_type for r in b.received} == {8}
    assert {r.packet.payload_type for r in a.received} == {0}
    _check_tone(b.audio(), 1000.0, 0.95)
    _check_tone(a.audio(), 440.0, 0.95)


async def test_packets_from_an_unsignalled_source_are_dropped_after_learning(
    media: MediaService, phones: OpenPhone
) -> None:
    a, b, _ = await _bridged(media, phones, g711.PCMU, g711.PCMU)
    await a.send_audio(tone([1000.0], -12.0, 0.7))  # past the 0.5 s / 5 packet window
    attacker = await phones(g711.PCMU)
    attacker.media = a.media
    attacker.ssrc = a.ssrc
    attacker.sequence, attacker.timestamp = a.sequence, a.timestamp
    bleed = bytes([0x55]) * 160  # a payload no tone encodes to
    for _ in range(10):
        attacker.send_packet(bleed)
    await a.send_audio(tone([1000.0], -12.0, 0.2))
    await asyncio.sleep(0.1)
    assert all(r.packet.payload != bleed for r in b.received)
    assert len(b.received) >= 40
    # The answer still goes to the real phone, not to the attacker.
    await b.send_audio(tone([600.0], -12.0, 0.2))
    await asyncio.sleep(0.05)
    assert attacker.received == []
    assert len(a.received) >= 9


async def test_answer_and_offer_sdp(media: MediaService, phones: OpenPhone) -> None:
    a = await phones(g711.PCMA)
    reply = await media.stub.CreateEndpoint(
        pb.CreateEndpointRequest(
            call_id="c",
            leg="a",
            remote_offer=a.offer(codecs=(g711.PCMU, g711.PCMA)).replace("a=sendrecv", "a=sendonly"),
            options=pb.MediaOptions(codecs=[common_pb2.CODEC_PCMA], telephone_event=True),
        )
    )
    assert reply.codec == common_pb2.CODEC_PCMA
    assert "m=audio " in reply.local_sdp and " RTP/AVP 8 101" in reply.local_sdp
    assert "a=recvonly" in reply.local_sdp
    assert "c=IN IP4 127.0.0.1" in reply.local_sdp
    offer = await media.stub.CreateEndpoint(
        pb.CreateEndpointRequest(call_id="c", leg="b", create_offer=pb.CreateOffer())
    )
    assert offer.codec == common_pb2.CODEC_UNSPECIFIED
    assert "RTP/AVP 0 8" in offer.local_sdp and "a=rtcp-mux" in offer.local_sdp
    b = await phones(g711.PCMA)
    updated = await media.stub.UpdateEndpoint(
        pb.UpdateEndpointRequest(endpoint_id=offer.endpoint_id, remote_answer=b.offer())
    )
    assert updated.codec == common_pb2.CODEC_PCMA and not updated.on_hold
    hold = await media.stub.UpdateEndpoint(
        pb.UpdateEndpointRequest(
            endpoint_id=offer.endpoint_id,
            remote_offer=b.offer().replace("a=sendrecv", "a=sendonly"),
        )
    )
    assert hold.on_hold and "a=recvonly" in hold.local_sdp


@pytest.mark.parametrize(
    ("sdp", "problem"),
    [
        ("", "SDP is empty"),
        ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=video 4000 RTP/AVP 96\r\n", "no m=audio line"),
        ("v=0\r\nm=audio 4000 RTP/AVP 0\r\n", "no c= connection address"),
        ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 70000 RTP/AVP 0\r\n", "port 70000 is outside"),
        ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 18\r\n", "no codec in common"),
        ("v=0\r\nc=IN IP6 ::1\r\nm=audio 4000 RTP/AVP 0\r\n", "IP4 only"),
    ],
)
async def test_bad_sdp_is_invalid_argument_naming_the_problem(
    media: MediaService, sdp: str, problem: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await media.stub.CreateEndpoint(pb.CreateEndpointRequest(call_id="c", remote_offer=sdp))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in (caught.value.details() or "")


async def test_unknown_endpoint_is_not_found(media: MediaService) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await media.stub.DestroyEndpoint(pb.DestroyEndpointRequest(endpoint_id="ep-nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ep-nope" in (caught.value.details() or "")
