"""Conference controls, digit collection edge cases, duplicate-free DTMF, leg recording with
pause/resume, and the SDP module on its own."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from callmesh.common.v1 import common_pb2
from callmesh.media.v1 import media_pb2 as pb
from callmesh_media.dsp import g711
from callmesh_media.dsp.analysis import band_power_fraction, dominant_frequency
from callmesh_media.dsp.tones import dtmf_tone, tone
from callmesh_media.rtp import TelephoneEventPayload
from callmesh_media.sdp import SdpError, parse_audio
from google.protobuf.duration_pb2 import Duration

from .harness import MediaService, Phone

OpenPhone = Callable[..., Awaitable[Phone]]


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def _digits(media: MediaService) -> list[str]:
    return [e.digit.digit for e in media.events if e.HasField("digit")]


async def _conference(
    media: MediaService, phones: OpenPhone, count: int
) -> tuple[str, list[Phone], list[str]]:
    conference = await media.stub.CreateConference(pb.CreateConferenceRequest(tenant_id="t1"))
    members, endpoints = [], []
    for _ in range(count):
        phone = await phones(g711.PCMU)
        endpoint = await media.endpoint_for(phone)
        await media.stub.JoinConference(
            pb.JoinConferenceRequest(conference_id=conference.conference_id, endpoint_id=endpoint)
        )
        members.append(phone)
        endpoints.append(endpoint)
    return conference.conference_id, members, endpoints


async def test_mute_listen_only_and_whisper(media: MediaService, phones: OpenPhone) -> None:
    room, (agent, caller, supervisor), (agent_ep, caller_ep, supervisor_ep) = await _conference(
        media, phones, 3
    )
    await media.stub.SetListenOnly(
        pb.SetListenOnlyRequest(conference_id=room, endpoint_id=caller_ep, listen_only=True)
    )
    await media.stub.Whisper(
        pb.WhisperRequest(conference_id=room, endpoint_id=supervisor_ep, to_endpoint_ids=[agent_ep])
    )
    await asyncio.gather(
        agent.send_audio(tone([500.0], -15.0, 1.0)),
        caller.send_audio(tone([1000.0], -15.0, 1.0)),
        supervisor.send_audio(tone([1500.0], -15.0, 1.0)),
    )
    await asyncio.sleep(0.15)
    middle = slice(2400, 6400)
    heard_by_agent = agent.audio()[middle]
    heard_by_caller = caller.audio()[middle]
    heard_by_supervisor = supervisor.audio()[middle]
    # The caller is listen-only: nobody hears 1 kHz. The supervisor whispers to the agent only.
    assert band_power_fraction(heard_by_agent, 1500) > 0.9
    assert band_power_fraction(heard_by_caller, 500) > 0.9
    assert band_power_fraction(heard_by_caller, 1500) < 0.01
    assert band_power_fraction(heard_by_supervisor, 500) > 0.9
    for heard in (heard_by_agent, heard_by_supervisor):
        assert band_power_fraction(heard, 1000) < 0.01

    await media.stub.MuteParticipant(
        pb.MuteParticipantRequest(conference_id=room, endpoint_id=agent_ep, muted=True)
    )
    await media.stub.Whisper(pb.WhisperRequest(conference_id=room, endpoint_id=supervisor_ep))
    leave = await media.stub.LeaveConference(
        pb.LeaveConferenceRequest(conference_id=room, endpoint_id=caller_ep)
    )
    assert leave.participants == 2
    played = await media.stub.Play(
        pb.PlayRequest(
            target=pb.MediaTarget(conference_id=room),
            items=[
                common_pb2.MediaSource(
                    tone=common_pb2.Tone(frequencies_hz=[2000], total=_seconds(0.6))
                )
            ],
        )
    )
    before = len(supervisor.audio())
    await asyncio.gather(
        agent.send_audio(tone([500.0], -15.0, 0.8)),
        supervisor.send_audio(tone([1500.0], -15.0, 0.8)),
    )
    (done,) = await media.wait_event("play_done")
    assert done.play_done.play_id == played.play_id
    assert done.play_done.end == pb.PLAY_END_COMPLETED
    later = supervisor.audio()[before + 800 : before + 4000]
    assert band_power_fraction(later, 500) < 0.01  # the agent is muted
    assert band_power_fraction(later, 2000) > 0.9  # the prompt plays into the room


async def test_collect_digits_type_ahead_max_digits_and_no_input(
    media: MediaService, phones: OpenPhone
) -> None:
    phone = await phones(g711.PCMU)
    endpoint = await media.endpoint_for(phone)
    await phone.send_audio(np.zeros(800))
    for digit in "42":
        _event_press(phone, digit)
    await asyncio.sleep(0.1)
    first = await media.stub.CollectDigits(
        pb.CollectDigitsRequest(endpoint_id=endpoint, max_digits=3)
    )
    _event_press(phone, "9")
    _event_press(phone, "1")  # after max_digits: type-ahead, flushed by the next request
    await asyncio.sleep(0.1)
    second = await media.stub.CollectDigits(
        pb.CollectDigitsRequest(
            endpoint_id=endpoint, flush_buffer=True, first_digit_timeout=_seconds(0.3)
        )
    )
    done = await media.wait_event("digits_collected", count=2)
    assert [(e.digits_collected.collect_id, e.digits_collected.digits) for e in done] == [
        (first.collect_id, "429"),
        (second.collect_id, ""),
    ]
    assert [e.digits_collected.end for e in done] == [
        pb.COLLECT_END_MAX_DIGITS,
        pb.COLLECT_END_NO_INPUT,
    ]


def _event_press(phone: Phone, digit: str, *, with_end: bool = True) -> None:
    event = "0123456789*#".index(digit)
    for step in range(1, 5):
        payload = TelephoneEventPayload(event, False, 10, 160 * step)
        phone.send_packet(bytes(payload), payload_type=101, marker=step == 1, advance=0)
    if with_end:
        for _ in range(3):
            end = TelephoneEventPayload(event, True, 10, 800)
            phone.send_packet(bytes(end), payload_type=101, advance=0)
    phone.timestamp = (phone.timestamp + 1600) & 0xFFFFFFFF


async def test_a_press_without_end_packets_is_one_digit(
    media: MediaService, phones: OpenPhone
) -> None:
    phone = await phones(g711.PCMU)
    await media.endpoint_for(phone)
    await phone.send_audio(np.zeros(800))
    _event_press(phone, "3", with_end=False)
    await asyncio.sleep(1.6)  # the press is closed by its timeout
    assert _digits(media) == ["3"]
    phone.timestamp = (phone.timestamp - 1600) & 0xFFFFFFFF
    for _ in range(3):  # its end packets, very late
        phone.send_packet(
            bytes(TelephoneEventPayload(3, True, 10, 800)), payload_type=101, advance=0
        )
    await asyncio.sleep(0.1)
    assert _digits(media) == ["3"]


async def test_a_digit_sent_both_in_band_and_as_event_counts_once(
    media: MediaService, phones: OpenPhone
) -> None:
    phone = await phones(g711.PCMU)
    await media.endpoint_for(phone, inband_dtmf=True)
    await phone.send_audio(np.zeros(800))
    for digit in "68":
        _event_press(phone, digit)
        await phone.send_audio(np.concatenate([dtmf_tone(digit, 0.1, -12.0), np.zeros(800)]))
    await asyncio.sleep(0.3)
    assert _digits(media) == ["6", "8"]


async def test_leg_recording_with_prompt_and_pause(
    media: MediaService, phones: OpenPhone, tmp_path: Path
) -> None:
    phone = await phones(g711.PCMU)
    endpoint = await media.endpoint_for(phone)
    target = pb.MediaTarget(endpoint_id=endpoint)
    await media.stub.Record(
        pb.RecordRequest(
            target=target, action=pb.RECORD_ACTION_START, recording_id="leg-1", stereo=True
        )
    )
    await media.stub.Play(
        pb.PlayRequest(
            target=target,
            items=[common_pb2.MediaSource(tone=common_pb2.Tone(frequencies_hz=[440]))],
            loop_forever=True,
        )
    )
    await phone.send_audio(tone([900.0], -12.0, 0.6))
    paused = await media.stub.Record(
        pb.RecordRequest(action=pb.RECORD_ACTION_PAUSE, recording_id="leg-1")
    )
    assert paused.state == pb.RECORD_STATE_PAUSED
    await phone.send_audio(tone([1700.0], -12.0, 0.4))  # not recorded
    await media.stub.Record(pb.RecordRequest(action=pb.RECORD_ACTION_RESUME, recording_id="leg-1"))
    await phone.send_audio(tone([900.0], -12.0, 0.6))
    await media.stub.Record(pb.RecordRequest(action=pb.RECORD_ACTION_STOP, recording_id="leg-1"))
    (done,) = await media.wait_event("record_done")
    assert 1.0 <= done.record_done.duration.ToTimedelta().total_seconds() <= 1.5
    with wave.open(str(tmp_path / "recordings" / "leg-1.wav")) as reader:
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    left, right = samples[0::2], samples[1::2]
    assert abs(dominant_frequency(left) - 900) < 5
    # Pause and resume act at the jitter buffer's playout point, a few frames behind the
    # network: at most that much (~60 ms of 1.3 s) of the paused tone may slip in.
    assert band_power_fraction(left, 1700) < 0.08
    assert abs(dominant_frequency(right) - 440) < 5  # what the leg heard: the prompt


def test_sdp_parsing_details() -> None:
    audio = parse_audio(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=sendonly\r\n"
        "m=video 5000 RTP/AVP 96\r\nc=IN IP4 10.0.0.9\r\n"
        "m=audio 4000 RTP/AVP 8 0 96\r\nc=IN IP4 10.0.0.2\r\na=rtpmap:96 telephone-event/8000\r\n"
        "a=ptime:30\r\na=rtcp:4005\r\n"
    )
    assert (audio.address, audio.port, audio.payload_types) == ("10.0.0.2", 4000, [8, 0, 96])
    assert audio.direction == "sendonly" and audio.on_hold
    assert audio.payload_type_of("telephone-event") == 96
    assert audio.payload_type_of("PCMU") == 0
    assert (audio.ptime_ms, audio.rtcp_port, audio.rtcp_mux) == (30, 4005, False)
    with pytest.raises(SdpError, match="not 'IN IP4 <address>'"):
        parse_audio("v=0\r\nc=IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\n")
    with pytest.raises(SdpError, match="payload type '9x' is not a number"):
        parse_audio("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 9x\r\n")
    assert parse_audio("v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n").on_hold


async def test_no_rtp_timeout_while_the_far_end_holds_with_inactive(
    media: MediaService, phones: OpenPhone
) -> None:
    phone = await phones(g711.PCMU)
    endpoint = await media.endpoint_for(phone, rtp_timeout=_seconds(0.3))
    held = await media.stub.UpdateEndpoint(
        pb.UpdateEndpointRequest(
            endpoint_id=endpoint, remote_offer=phone.offer().replace("a=sendrecv", "a=inactive")
        )
    )
    assert held.on_hold and "a=inactive" in held.local_sdp
    await asyncio.sleep(0.8)
    assert not [e for e in media.events if e.HasField("rtp_timeout")]
    await media.stub.UpdateEndpoint(
        pb.UpdateEndpointRequest(endpoint_id=endpoint, remote_offer=phone.offer())
    )
    (timeout,) = await media.wait_event("rtp_timeout", within=2)
    assert timeout.endpoint_id == endpoint
