"""Playback, recording, digits, conferences, fax tones, timeouts and drain through the real
service (gRPC on port 0, UDP on 127.0.0.1), with audio checked by signal analysis."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from callmesh.common.v1 import common_pb2
from callmesh.media.v1 import media_pb2 as pb
from callmesh_media.dsp import g711
from callmesh_media.dsp.analysis import band_power_fraction, dominant_frequency
from callmesh_media.dsp.levels import sine_peak
from callmesh_media.dsp.tones import dtmf_sequence, tone
from callmesh_media.rtp import RtpPacket
from callmesh_media.sounds import read_wav
from google.protobuf.duration_pb2 import Duration

from .conftest import SIPP_SHARE, read_pcap_udp_payloads
from .harness import MediaService, Phone, free_port_range, start_media

OpenPhone = Callable[..., Awaitable[Phone]]
SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
needs_sounds = pytest.mark.skipif(
    not SOUNDS.is_dir(), reason="Asterisk sounds not installed (make setup)"
)


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def _digits(media: MediaService) -> list[tuple[str, int]]:
    return [(e.digit.digit, e.digit.source) for e in media.events if e.HasField("digit")]


@needs_sounds
async def test_a_prompt_arrives_complete(media: MediaService, phones: OpenPhone) -> None:
    phone = await phones(g711.PCMU)
    endpoint = await media.endpoint_for(phone)
    reply = await media.stub.Play(
        pb.PlayRequest(
            target=pb.MediaTarget(endpoint_id=endpoint),
            items=[common_pb2.MediaSource(prompt="hello-world")],
        )
    )
    done = await media.wait_event("play_done", within=10)
    assert [(e.play_done.play_id, e.play_done.end) for e in done] == [
        (reply.play_id, pb.PLAY_END_COMPLETED)
    ]
    await asyncio.sleep(0.05)
    prompt = read_wav(SOUNDS / "hello-world.wav")
    heard = phone.audio()
    frames = -(-len(prompt) // 160)
    assert len(heard) == frames * 160  # every frame, once
    expected = np.zeros(frames * 160, dtype=np.int16)
    expected[: len(prompt)] = prompt
    # Sample for sample what the prompt is after one G.711 encoding: nothing lost or reordered.
    assert np.array_equal(heard, g711.PCMU.decode(g711.PCMU.encode(expected)))
    assert np.sqrt(np.mean(heard.astype(np.float64) ** 2)) > 300


@needs_sounds
async def test_playback_queue_and_stop_on_dtmf(media: MediaService, phones: OpenPhone) -> None:
    phone = await phones(g711.PCMU)
    endpoint = await media.endpoint_for(phone)
    target = pb.MediaTarget(endpoint_id=endpoint)
    music = await media.stub.Play(
        pb.PlayRequest(
            target=target,
            items=[common_pb2.MediaSource(music_class="default")],
            loop_forever=True,
            stop_on_dtmf=True,
        )
    )
    beep = await media.stub.Play(
        pb.PlayRequest(
            target=target, items=[common_pb2.MediaSource(prompt="beep")], mode=pb.PLAY_MODE_QUEUE
        )
    )
    await asyncio.sleep(0.3)
    _send_event_digit(phone, "7")
    done = await media.wait_event("play_done", count=2)
    assert [(e.play_done.play_id, e.play_done.end, e.play_done.digit) for e in done] == [
        (music.play_id, pb.PLAY_END_DTMF, "7"),
        (beep.play_id, pb.PLAY_END_COMPLETED, ""),
    ]
    missing = await media.stub.Play(
        pb.PlayRequest(target=target, items=[common_pb2.MediaSource(prompt="no-such-prompt")])
    )
    done = await media.wait_event("play_done", count=3)
    assert done[-1].play_done.play_id == missing.play_id
    assert done[-1].play_done.end == pb.PLAY_END_ERROR
    assert done[-1].play_done.error == "prompt-not-found:no-such-prompt"


def _send_event_digit(phone: Phone, digit: str) -> None:
    """One RFC 4733 key press (start, updates, three end packets), sent at once."""
    from callmesh_media.rtp import TelephoneEventSender

    sender = TelephoneEventSender(101, phone.ssrc, initial_sequence=phone.sequence)
    for scheduled in sender.digit(digit, 0.1, phone.timestamp):
        packet = scheduled.packet
        phone.send_packet(
            packet.payload,
            payload_type=101,
            marker=packet.marker,
            timestamp=phone.timestamp,
            advance=0,
        )
    phone.timestamp = (phone.timestamp + 800) & 0xFFFFFFFF


async def _replay_sipp_digit(phone: Phone, name: str) -> None:
    """A sipp DTMF capture re-stamped into the phone's stream, at its recorded pace."""
    packets = read_pcap_udp_payloads(SIPP_SHARE / name)
    base = RtpPacket.parse(packets[0][1])
    start_time = packets[0][0]
    loop = asyncio.get_running_loop()
    began = loop.time()
    previous_sequence = None
    for at, data in packets:
        packet = RtpPacket.parse(data)
        delay = began + (at - start_time) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if previous_sequence == packet.sequence_number:
            phone.sequence = (phone.sequence - 1) & 0xFFFF  # sipp repeats the end packet as is
        previous_sequence = packet.sequence_number
        phone.send_packet(
            packet.payload,
            payload_type=101,
            marker=packet.marker,
            timestamp=(phone.timestamp + packet.timestamp - base.timestamp) & 0xFFFFFFFF,
            advance=0,
        )
    phone.timestamp = (phone.timestamp + 1600) & 0xFFFFFFFF


async def test_rfc4733_digits_from_sipp_captures_once_each(
    media: MediaService, phones: OpenPhone
) -> None:
    if not (SIPP_SHARE / "dtmf_2833_1.pcap").exists():
        pytest.skip("sipp DTMF captures not installed (Debian sip-tester)")
    caller = await phones(g711.PCMU)
    callee = await phones(g711.PCMU)
    endpoint = await media.endpoint_for(caller)
    other = await media.endpoint_for(callee)
    await media.stub.Bridge(pb.BridgeRequest(endpoint_a=endpoint, endpoint_b=other))
    collect = await media.stub.CollectDigits(
        pb.CollectDigitsRequest(endpoint_id=endpoint, terminators="#", max_digits=10)
    )
    for name in ("dtmf_2833_1.pcap", "dtmf_2833_5.pcap", "dtmf_2833_pound.pcap"):
        await caller.send_audio(np.zeros(800))
        await _replay_sipp_digit(caller, name)
    await caller.send_audio(np.zeros(800))
    collected = await media.wait_event("digits_collected")
    assert _digits(media) == [(d, pb.DTMF_SOURCE_RFC4733) for d in "15#"]
    assert [
        (e.digits_collected.collect_id, e.digits_collected.digits, e.digits_collected.terminator)
        for e in collected
    ] == [(collect.collect_id, "15", "#")]
    assert collected[0].digits_collected.end == pb.COLLECT_END_TERMINATOR
    # The key presses were relayed to the other leg as telephone-events too.
    relayed = {
        r.packet.timestamp: r.packet.payload[0]
        for r in callee.received
        if r.packet.payload_type == 101
    }
    assert sorted(relayed.values()) == [1, 5, 11]


async def test_inband_digits_with_noise_once_each(media: MediaService, phones: OpenPhone) -> None:
    phone = await phones(g711.PCMU)
    endpoint = await media.endpoint_for(phone, inband_dtmf=True)
    rng = np.random.default_rng(7)
    signal = dtmf_sequence("2580*#", tone_duration=0.07, gap=0.07, level_dbm0=-18.0)
    noise = rng.normal(0.0, sine_peak(-42.0) / np.sqrt(2), len(signal))
    await phone.send_audio(np.concatenate([signal + noise, np.zeros(1600)]))
    await asyncio.sleep(0.3)
    assert _digits(media) == [(d, pb.DTMF_SOURCE_INBAND) for d in "2580*#"]
    assert all(e.endpoint_id == endpoint for e in media.events if e.HasField("digit"))


async def test_stereo_recording_of_a_bridge(
    media: MediaService, phones: OpenPhone, tmp_path: Path
) -> None:
    caller = await phones(g711.PCMU)
    callee = await phones(g711.PCMA)
    endpoint_a = await media.endpoint_for(caller)
    endpoint_b = await media.endpoint_for(callee)
    bridge = await media.stub.Bridge(pb.BridgeRequest(endpoint_a=endpoint_a, endpoint_b=endpoint_b))
    started = await media.stub.Record(
        pb.RecordRequest(
            target=pb.MediaTarget(bridge_id=bridge.bridge_id),
            action=pb.RECORD_ACTION_START,
            recording_id="rec-1",
            stereo=True,
            storage_key="t1/rec-1.wav",
        )
    )
    assert started.state == pb.RECORD_STATE_RECORDING
    await asyncio.gather(
        caller.send_audio(tone([700.0], -12.0, 1.2)), callee.send_audio(tone([1300.0], -12.0, 1.2))
    )
    await asyncio.sleep(0.15)
    stopped = await media.stub.Record(
        pb.RecordRequest(action=pb.RECORD_ACTION_STOP, recording_id="rec-1")
    )
    assert stopped.state == pb.RECORD_STATE_STOPPED
    (done,) = await media.wait_event("record_done")
    path = tmp_path / "recordings" / "t1" / "rec-1.wav"
    assert done.record_done.storage_uri == path.resolve().as_uri()
    assert done.record_done.channels == 2 and done.record_done.sample_rate_hz == 8000
    assert done.record_done.size_bytes == path.stat().st_size
    with wave.open(str(path)) as reader:
        assert reader.getnchannels() == 2 and reader.getframerate() == 8000
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    left, right = samples[0::2], samples[1::2]
    assert 1.1 <= len(left) / 8000 <= 1.6
    assert abs(dominant_frequency(left) - 700) < 5
    assert abs(dominant_frequency(right) - 1300) < 5
    assert band_power_fraction(left, 1300) < 0.01 and band_power_fraction(right, 700) < 0.01
    # The call itself was relayed meanwhile.
    assert abs(dominant_frequency(callee.audio()[800:]) - 700) < 5


async def test_three_party_conference(media: MediaService, phones: OpenPhone) -> None:
    frequencies = (500.0, 1000.0, 1500.0)
    members = [await phones(codec) for codec in (g711.PCMU, g711.PCMA, g711.PCMU)]
    conference = await media.stub.CreateConference(pb.CreateConferenceRequest(tenant_id="t1"))
    for phone in members:
        endpoint = await media.endpoint_for(phone)
        joined = await media.stub.JoinConference(
            pb.JoinConferenceRequest(conference_id=conference.conference_id, endpoint_id=endpoint)
        )
    assert joined.participants == 3
    await asyncio.gather(
        *(
            phone.send_audio(tone([f], -15.0, 1.5))
            for phone, f in zip(members, frequencies, strict=True)
        )
    )
    await asyncio.sleep(0.2)
    for phone, own in zip(members, frequencies, strict=True):
        heard = phone.audio()
        assert len(heard) >= 1.2 * 8000
        steady = heard[2400:10400]  # one second in the middle of the call
        for other in frequencies:
            fraction = band_power_fraction(steady, other)
            if other == own:
                assert fraction < 0.01, f"{own} Hz hears itself"
            else:
                assert fraction > 0.3, f"{own} Hz does not hear {other} Hz"


async def test_fax_tone_and_rtp_timeout_events(media: MediaService, phones: OpenPhone) -> None:
    phone = await phones(g711.PCMU)
    endpoint = await media.endpoint_for(
        phone, detect_fax=True, rtp_timeout=_seconds(0.3), stats_interval=_seconds(0.5)
    )
    await phone.send_audio(tone([2100.0], -15.0, 1.0))
    (fax,) = await media.wait_event("fax_tone")
    assert fax.endpoint_id == endpoint and fax.fax_tone.kind == pb.FAX_TONE_KIND_CED
    (timeout,) = await media.wait_event("rtp_timeout", within=2)
    assert timeout.rtp_timeout.silent_for.ToTimedelta().total_seconds() >= 0.3
    stats = await media.wait_event("leg_stats")
    assert stats[-1].leg_stats.packets_received >= 48 and stats[-1].leg_stats.packets_lost == 0
    final = await media.stub.DestroyEndpoint(pb.DestroyEndpointRequest(endpoint_id=endpoint))
    # RFC 3550 A.1: the first packet of a source is on probation and not counted.
    assert final.stats.packets_received >= 49 and final.stats.packets_lost == 0
    assert final.stats.bytes_received == 50 * 160 and final.stats.codec == common_pb2.CODEC_PCMU


async def test_drain_refuses_new_endpoints_and_waits_for_old_ones(
    media: MediaService, phones: OpenPhone
) -> None:
    a = await phones(g711.PCMU)
    b = await phones(g711.PCMU)
    endpoint_a = await media.endpoint_for(a)
    endpoint_b = await media.endpoint_for(b)
    await media.stub.Bridge(pb.BridgeRequest(endpoint_a=endpoint_a, endpoint_b=endpoint_b))
    drained = asyncio.create_task(media.engine.drain())
    await asyncio.sleep(0.05)
    load = await media.stub.GetLoad(pb.GetLoadRequest())
    assert load.draining and load.active_endpoints == 2 and load.active_bridges == 1
    late = await phones(g711.PCMU)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await media.endpoint_for(late)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await a.send_audio(tone([1000.0], -12.0, 0.4))  # the existing call goes on
    await asyncio.sleep(0.05)
    assert abs(dominant_frequency(b.audio()) - 1000) < 5
    await media.stub.DestroyEndpoint(pb.DestroyEndpointRequest(endpoint_id=endpoint_a))
    assert not drained.done()
    await media.stub.DestroyEndpoint(pb.DestroyEndpointRequest(endpoint_id=endpoint_b))
    await asyncio.wait_for(drained, 1.0)


async def test_no_free_port_is_resource_exhausted(tmp_path: Path, phones: OpenPhone) -> None:
    low, _ = free_port_range()
    async for media in start_media(tmp_path, port_range=(low, low + 3)):
        for _ in range(2):
            await media.endpoint_for(await phones())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await media.endpoint_for(await phones())
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"no free RTP port pair in {low}-{low + 3}" in (caught.value.details() or "")
