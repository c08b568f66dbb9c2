"""A real media service for tests: the engine behind a real grpc.aio server on port 0, real
UDP sockets on 127.0.0.1, and far-end "phones" that send and receive G.711 RTP.

Nothing here inspects the service's internals to decide a test: audio that reaches a phone
is decoded and analysed (frequency, energy, duration); events are read from the Events stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc
import numpy as np
import numpy.typing as npt
from callmesh.media.v1 import media_pb2 as pb
from callmesh.media.v1 import media_pb2_grpc
from callmesh_core.grpc_server import GrpcServer
from callmesh_core.logging import EventLogger
from callmesh_media.dsp import g711
from callmesh_media.dsp.resample import to_int16
from callmesh_media.engine import EngineConfig, MediaEngine
from callmesh_media.events import EventBus
from callmesh_media.rtp import LearningPolicy, RtpPacket
from callmesh_media.servicer import MediaControlServicer
from callmesh_media.sounds import SoundLibrary
from opentelemetry import trace

FRAME = 160
Address = tuple[str, int]


@dataclass
class Received:
    at: float
    source: Address
    packet: RtpPacket


class Phone(asyncio.DatagramProtocol):
    """A far end: one UDP socket, records what arrives, sends RTP it is told to."""

    def __init__(self, codec: g711.G711Codec = g711.PCMU) -> None:
        self.codec = codec
        self.received: list[Received] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.ssrc = random.getrandbits(32)
        self.sequence = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        self.media: Address = ("127.0.0.1", 0)  # where to send: the endpoint's port

    @classmethod
    async def open(cls, codec: g711.G711Codec = g711.PCMU) -> Phone:
        loop = asyncio.get_running_loop()
        _, phone = await loop.create_datagram_endpoint(
            lambda: cls(codec), local_addr=("127.0.0.1", 0)
        )
        return phone

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if len(data) >= 2 and 192 <= data[1] <= 223:
            return  # RTCP
        self.received.append(
            Received(asyncio.get_running_loop().time(), addr, RtpPacket.parse(data))
        )

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def offer(self, codecs: tuple[g711.G711Codec, ...] | None = None, te: int | None = 101) -> str:
        codecs = codecs or (self.codec,)
        pts = [str(c.payload_type) for c in codecs] + ([str(te)] if te is not None else [])
        lines = [
            "v=0",
            "o=phone 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            f"m=audio {self.port} RTP/AVP {' '.join(pts)}",
            *[f"a=rtpmap:{c.payload_type} {c.name}/8000" for c in codecs],
        ]
        if te is not None:
            lines += [f"a=rtpmap:{te} telephone-event/8000", f"a=fmtp:{te} 0-16"]
        lines += ["a=ptime:20", "a=sendrecv"]
        return "\r\n".join(lines) + "\r\n"

    def use_answer(self, sdp: str) -> None:
        port = next(int(line.split()[1]) for line in sdp.splitlines() if line.startswith("m=audio"))
        self.media = ("127.0.0.1", port)

    def send_packet(
        self,
        payload: bytes,
        *,
        payload_type: int | None = None,
        marker: bool = False,
        timestamp: int | None = None,
        advance: int = FRAME,
    ) -> None:
        assert self.transport is not None
        packet = RtpPacket(
            payload_type=self.codec.payload_type if payload_type is None else payload_type,
            sequence_number=self.sequence,
            timestamp=self.timestamp if timestamp is None else timestamp,
            ssrc=self.ssrc,
            payload=payload,
            marker=marker,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + advance) & 0xFFFFFFFF
        self.transport.sendto(bytes(packet), self.media)

    async def send_audio(self, samples: npt.ArrayLike, *, pace: float = 0.02) -> None:
        """Send int16/float samples as 20 ms packets, paced like a phone."""
        audio = to_int16(np.asarray(samples, dtype=np.float64))
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(0, len(audio) - FRAME + 1, FRAME):
            self.send_packet(self.codec.encode(audio[index : index + FRAME]).tobytes())
            delay = start + (index // FRAME + 1) * pace - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    def audio(
        self, payload_type: int | None = None, codec: g711.G711Codec | None = None
    ) -> npt.NDArray[np.int16]:
        """Decoded audio received, in arrival order of sequence numbers."""
        codec = codec or self.codec
        wanted = codec.payload_type if payload_type is None else payload_type
        packets = sorted(
            (r.packet for r in self.received if r.packet.payload_type == wanted),
            key=lambda p: p.sequence_number,
        )
        if not packets:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([codec.decode(p.payload) for p in packets])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class MediaService:
    engine: MediaEngine
    stub: media_pb2_grpc.MediaControlStub
    channel: grpc.aio.Channel
    server: GrpcServer
    events: list[pb.MediaEvent] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def start_events(self, owner: str = "") -> None:
        stream = self.stub.Events(pb.EventsRequest(owner=owner))

        async def read() -> None:
            async for event in stream:
                self.events.append(event)

        self._reader = asyncio.create_task(read())
        # The subscription exists once the server has run the handler: wait for it.
        for _ in range(100):
            if self.engine.bus._subscriptions:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("Events stream did not start")

    async def wait_event(
        self, kind: str, *, within: float = 5.0, count: int = 1
    ) -> list[pb.MediaEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            found = [e for e in self.events if e.WhichOneof("kind") == kind]
            if len(found) >= count or loop.time() > deadline:
                return found
            await asyncio.sleep(0.02)

    async def endpoint_for(self, phone: Phone, **options: object) -> str:
        """Create an endpoint answering the phone's offer and point the phone at it."""
        reply = await self.stub.CreateEndpoint(
            pb.CreateEndpointRequest(
                call_id="call-1",
                leg="a",
                tenant_id="t1",
                owner="edge-0",
                remote_offer=phone.offer(),
                options=pb.MediaOptions(telephone_event=True, **options),  # type: ignore[arg-type]
            )
        )
        phone.use_answer(reply.local_sdp)
        return reply.endpoint_id


def free_port_range(size: int = 200) -> tuple[int, int]:
    """A range of even-aligned ports that looks unused right now."""
    for _ in range(50):
        low = random.randrange(30000, 59000, 2)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", low))
        except OSError:
            continue
        finally:
            probe.close()
        return low, low + size - 1
    raise RuntimeError("no free port range")


async def start_media(
    tmp_path: Path,
    *,
    port_range: tuple[int, int] | None = None,
    learning: LearningPolicy | None = None,
    sounds_dir: Path = Path("/usr/share/asterisk/sounds"),
) -> AsyncIterator[MediaService]:
    low, high = port_range or free_port_range()
    log = EventLogger(logging.getLogger("callmesh.test.media"))
    bus = EventBus()
    engine = MediaEngine(
        EngineConfig(
            replica_id="media-test",
            rtp_host="127.0.0.1",
            advertised_address="127.0.0.1",
            port_min=low,
            port_max=high,
            learning=learning or LearningPolicy(max_packets=5, window_seconds=0.5),
            recording_dir=tmp_path / "recordings",
        ),
        SoundLibrary(
            sounds_dir=sounds_dir,
            moh_dir=Path("/usr/share/asterisk/moh"),
            tenant_prompts_dir=tmp_path / "prompts",
            default_language="en",
        ),
        log,
        bus,
    )
    engine.start()
    server = GrpcServer(host="127.0.0.1", port=0, tracer=trace.get_tracer("test"), log=log)
    server.add(
        media_pb2_grpc.add_MediaControlServicer_to_server,
        MediaControlServicer(engine, bus, "media-test"),
        "callmesh.media.v1.MediaControl",
    )
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    service = MediaService(engine, media_pb2_grpc.MediaControlStub(channel), channel, server)
    try:
        yield service
    finally:
        if service._reader is not None:
            service._reader.cancel()
        await channel.close()
        await server.stop(0)
        await engine.close()
