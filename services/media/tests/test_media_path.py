"""The core pieces composed the way the media service will use them, with audio checked by
signal analysis at the far end: a bridged call with PCMU->PCMA transcoding, a 3-party
conference through jitter buffers and the mixer, and in-band DTMF through a decoding path.
Networks are simulated (random delay, reordering); time is passed in, nothing sleeps."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import numpy.typing as npt
import pytest
from callmesh_media.dsp import g711
from callmesh_media.dsp.analysis import dominant_frequency, tone_snr_db
from callmesh_media.dsp.dtmf import DtmfDetection, DtmfDetector
from callmesh_media.dsp.goertzel import tone_powers
from callmesh_media.dsp.levels import power_to_dbm0
from callmesh_media.dsp.mixer import MixLayout, mix
from callmesh_media.dsp.resample import to_int16
from callmesh_media.dsp.tones import ToneGenerator, dtmf_sequence
from callmesh_media.rtp import JitterBuffer, RtpLeg, RtpPacket

FRAME = 160
TICK = 0.02
Address = tuple[str, int]


@dataclass(order=True)
class _Event:
    at: float
    order: int
    action: Callable[[float], None] = field(compare=False)


class Network:
    """Delivers datagrams after a random delay (so they can overtake each other)."""

    def __init__(self, seed: int, max_delay: float) -> None:
        self.rng = random.Random(seed)
        self.max_delay = max_delay
        self.queue: list[_Event] = []
        self._order = 0

    def at(self, when: float, action: Callable[[float], None]) -> None:
        self._order += 1
        heapq.heappush(self.queue, _Event(when, self._order, action))

    def send(self, data: bytes, now: float, deliver: Callable[[bytes, float], None]) -> None:
        self.at(now + 0.01 + self.rng.uniform(0, self.max_delay), lambda t: deliver(data, t))

    def send_later(
        self, when: float, make: Callable[[], bytes], deliver: Callable[[bytes, float], None]
    ) -> None:
        """At ``when``, build a datagram (e.g. a phone's next packet) and send it."""
        self.at(when, lambda now: self.send(make(), now, deliver))

    def run_until(self, end: float) -> None:
        while self.queue and self.queue[0].at <= end:
            event = heapq.heappop(self.queue)
            event.action(event.at)


class Phone:
    """A far-end endpoint: sends encoded frames, receives through its own jitter buffer."""

    def __init__(self, address: Address, media: Address, codec: g711.G711Codec, ssrc: int) -> None:
        self.address = address
        self.codec = codec
        self.ssrc = ssrc
        self.leg = RtpLeg(local_ssrc=ssrc, signalled_address=media, now=0.0)
        self.buffer = JitterBuffer()
        self.heard: list[npt.NDArray[np.int16]] = []
        self._sequence = 0

    def packet(self, samples: npt.NDArray[np.int16]) -> bytes:
        packet = RtpPacket(
            self.codec.payload_type,
            self._sequence,
            self._sequence * FRAME,
            self.ssrc,
            self.codec.encode(samples).tobytes(),
        )
        self._sequence += 1
        return bytes(packet)

    def receive(self, data: bytes, now: float, source: Address) -> None:
        packet = self.leg.receive_datagram(data, source, now)
        if packet is not None:
            self.buffer.push(packet, now)

    def receive_from(self, source: Address, data: bytes, now: float) -> None:
        self.receive(data, now, source)

    def tick(self, now: float) -> None:
        frame = self.buffer.pop(now)
        if frame is None or frame.payload is None:
            self.heard.append(np.zeros(FRAME, dtype=np.int16))
        else:
            self.heard.append(self.codec.decode(frame.payload))

    def audio(self) -> npt.NDArray[np.int16]:
        return np.concatenate(self.heard)


MEDIA_A: Address = ("192.0.2.10", 20000)
MEDIA_B: Address = ("192.0.2.10", 20002)
MEDIA_C: Address = ("192.0.2.10", 20004)


def test_bridged_call_pcmu_to_pcma_tone_arrives_at_the_callee() -> None:
    network = Network(seed=1, max_delay=0.03)
    caller = Phone(("198.51.100.1", 5004), MEDIA_A, g711.PCMU, ssrc=0x1111)
    callee = Phone(("198.51.100.2", 6004), MEDIA_B, g711.PCMA, ssrc=0x2222)
    caller_leg = RtpLeg(local_ssrc=0xA, signalled_address=caller.address, now=0.0)
    callee_leg = RtpLeg(local_ssrc=0xB, signalled_address=callee.address, now=0.0)

    def media_receives_from_caller(data: bytes, now: float) -> None:
        packet = caller_leg.receive_datagram(data, caller.address, now)
        assert packet is not None
        # Relay path with transcoding: no jitter buffer, payload converted by table lookup.
        packet.payload = g711.transcode(packet.payload, g711.PCMU, g711.PCMA)
        packet.payload_type = g711.PCMA.payload_type
        out = callee_leg.prepare_outgoing(packet, now)
        if out is not None:
            network.send(out, now, partial(callee.receive_from, MEDIA_B))

    source = ToneGenerator([1000.0], -10.0)
    seconds = 3.0
    for k in range(int(seconds / TICK)):
        now = k * TICK
        frame = to_int16(source.read(FRAME))
        network.send_later(now, partial(caller.packet, frame), media_receives_from_caller)
        network.at(now + 0.005, callee.tick)
    network.run_until(seconds + 1.0)

    audio = callee.audio()
    playing = audio[np.flatnonzero(audio)[0] :][: int(2.5 * 8000)]
    assert len(playing) == int(2.5 * 8000)
    assert dominant_frequency(playing) == pytest.approx(1000.0, abs=1.0)
    assert tone_snr_db(playing, 1000.0) > 25.0
    stats = callee.leg.statistics()
    assert stats.packets_lost == 0
    assert callee.buffer.stats.late == 0
    # Reordered on the way, yet the callee's buffer had every packet in time.
    assert callee.buffer.stats.concealed <= 2


def test_three_party_conference_through_jitter_buffers_and_the_mixer() -> None:
    network = Network(seed=2, max_delay=0.02)
    tones = (500.0, 800.0, 1300.0)
    phones = [
        Phone(("198.51.100.1", 5004), MEDIA_A, g711.PCMU, ssrc=0x1),
        Phone(("198.51.100.2", 5004), MEDIA_B, g711.PCMA, ssrc=0x2),
        Phone(("198.51.100.3", 5004), MEDIA_C, g711.PCMU, ssrc=0x3),
    ]
    media_addresses = (MEDIA_A, MEDIA_B, MEDIA_C)
    legs = [
        RtpLeg(local_ssrc=0x10 + i, signalled_address=p.address, now=0.0)
        for i, p in enumerate(phones)
    ]
    buffers = [JitterBuffer() for _ in phones]
    generators = [ToneGenerator([f], -15.0) for f in tones]
    layout = MixLayout.uniform(rooms=1, size=3)
    mixed_sequence = [0]

    def media_receives(i: int) -> Callable[[bytes, float], None]:
        def receive(data: bytes, now: float) -> None:
            packet = legs[i].receive_datagram(data, phones[i].address, now)
            if packet is not None:
                buffers[i].push(packet, now)

        return receive

    def media_tick(now: float) -> None:
        frames = np.zeros((3, FRAME), dtype=np.int16)
        for i, buffer in enumerate(buffers):
            frame = buffer.pop(now)
            if frame is not None and frame.payload is not None:
                frames[i] = phones[i].codec.decode(frame.payload)
        mixed = mix(frames, layout)
        for i, phone in enumerate(phones):
            packet = RtpPacket(
                phone.codec.payload_type,
                mixed_sequence[0] & 0xFFFF,
                mixed_sequence[0] * FRAME,
                0xC0FFEE,  # the mixer is one source for every leg
                phone.codec.encode(mixed[i]).tobytes(),
            )
            out = legs[i].prepare_outgoing(packet, now)
            assert out is not None
            network.send(out, now, partial(phone.receive_from, media_addresses[i]))
        mixed_sequence[0] += 1

    seconds = 3.0
    for k in range(int(seconds / TICK)):
        now = k * TICK
        for i, phone in enumerate(phones):
            frame = to_int16(generators[i].read(FRAME))
            network.send_later(now, partial(phone.packet, frame), media_receives(i))
            network.at(now + 0.007, phone.tick)
        network.at(now + 0.003, media_tick)
    network.run_until(seconds + 1.0)

    for i, phone in enumerate(phones):
        audio = phone.audio()[int(0.5 * 8000) : int(2.5 * 8000)].astype(np.float64)
        levels = [power_to_dbm0(p) for p in tone_powers(audio[None, :], tones)[0]]
        for j, level in enumerate(levels):
            if i == j:
                assert level < -50.0, (i, levels)  # not their own voice
            else:
                assert level == pytest.approx(-15.0, abs=1.0), (i, levels)


def test_inband_dtmf_through_a_jittery_pcma_path_is_detected_once_each() -> None:
    network = Network(seed=3, max_delay=0.04)
    phone = Phone(("198.51.100.1", 5004), MEDIA_A, g711.PCMA, ssrc=0x1)
    leg = RtpLeg(local_ssrc=0xA, signalled_address=phone.address, now=0.0)
    buffer = JitterBuffer()
    detector = DtmfDetector()
    digits: list[str] = []
    rng = np.random.default_rng(3)
    signal = dtmf_sequence("0123456789*#ABCD", tone_duration=0.06, gap=0.06, level_dbm0=-20.0)
    signal = signal + rng.normal(0, 60.0, len(signal))  # ~ -48 dBm0 line noise
    samples = to_int16(np.concatenate([signal, np.zeros(FRAME - len(signal) % FRAME)]))

    def media_receives(data: bytes, now: float) -> None:
        packet = leg.receive_datagram(data, phone.address, now)
        if packet is not None:
            buffer.push(packet, now)

    def media_tick(now: float) -> None:
        frame = buffer.pop(now)
        audio = (
            np.zeros(FRAME)
            if frame is None or frame.payload is None
            else g711.alaw_decode(frame.payload)
        )
        digits.extend(n.digit for n in detector.process(audio) if isinstance(n, DtmfDetection))

    frames = samples.reshape(-1, FRAME)
    for k, frame in enumerate(frames):
        network.send_later(k * TICK, partial(phone.packet, frame), media_receives)
    for k in range(len(frames) + 20):
        network.at(k * TICK + 0.004, media_tick)
    network.run_until(len(frames) * TICK + 1.0)
    assert "".join(digits) == "0123456789*#ABCD"
