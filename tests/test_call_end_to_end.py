"""One call across the platform, with audio: extension 101 calls extension 102.

Everything on the call's path is the real thing, in this process: the api's `Provisioning`
server over its `ConfigStore` (tenant, users, and the tenant's routing document stored in its
`routing_configs` table), the routing service's `RoutingServicer` over a tenant cache that
reads that document through `Provisioning.GetRoutingConfig`, the sip-edge (an `edge_replica`
of its own test helpers) and the media service's engine behind `MediaControl`, with the real
PostgreSQL and Kafka. The phones are the test: the caller answers a 407 with MD5 digest, the
callee registers and answers the INVITE the edge sends it. Each phone then sends a G.711
mu-law tone in 20 ms RTP packets to the media address of the SDP it was given (1000 Hz from
the caller, 1500 Hz from the callee), and each must hear the other's tone.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import numpy as np
import pytest
from callmesh.media.v1 import media_pb2 as media_pb
from callmesh.media.v1 import media_pb2_grpc
from callmesh.provisioning.v1 import provisioning_pb2_grpc
from callmesh.routing.v1 import routing_pb2_grpc
from callmesh_api.provisioning import ProvisioningServicer
from callmesh_api.store import ROUTING_CONFIGS, ConfigStore
from callmesh_core.db import create_pool, migrate
from callmesh_core.grpc_server import GrpcServer, create_channel
from callmesh_core.kafka import ensure_topics
from callmesh_core.logging import EventLogger
from callmesh_media.dsp.analysis import dominant_frequency
from callmesh_media.dsp.g711 import ulaw_decode, ulaw_encode
from callmesh_media.dsp.goertzel import tone_powers
from callmesh_media.dsp.tones import tone
from callmesh_media.engine import EngineConfig, MediaEngine
from callmesh_media.events import EventBus
from callmesh_media.rtp.packet import RtpPacket
from callmesh_media.servicer import MediaControlServicer
from callmesh_media.sounds import SoundLibrary
from callmesh_routing.icm_sources import ContactHistory, IcmPrefetch
from callmesh_routing.servicer import RoutingServicer
from callmesh_routing.tenants import ProvisioningDocuments, TenantConfigs
from callmesh_sip_edge.sip.digest import DigestAlgorithm, build_authorization, parse_challenge
from callmesh_sip_edge.sip.message import SipRequest, SipResponse, new_branch, new_tag
from callmesh_sip_edge.sip.parser import parse_message
from opentelemetry import trace

ROOT = Path(__file__).resolve().parents[1]
ROUTING_MIGRATIONS = ROOT / "services/routing/src/callmesh_routing/migrations"
LOG = EventLogger(logging.getLogger("callmesh.test.end_to_end"))

CALLER_HZ = 1000.0
CALLEE_HZ = 1500.0
SAMPLES_PER_PACKET = 160  # 20 ms of 8 kHz PCMU
TALK_SECONDS = 1.6


def _load_sip_edge_helpers() -> ModuleType:
    """The sip-edge tests' helpers (edge_replica, SipClient, Provisioned): no package holds
    them, so the module is loaded from its file under a name of its own."""
    name = "callmesh_e2e_sip_edge_helpers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "services/sip-edge/tests/conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


edge_helpers = _load_sip_edge_helpers()

# A tenant's whole routing: two users; every other call goes to a scenario that hangs up.
ROUTING_DOCUMENT: dict[str, Any] = {
    "default_scenario": "fallback",
    "numbering": {"default_region": "RU", "local_prefixes": ["7812"], "max_internal_digits": 3},
    "directory": {
        "users": [{"extension": "101", "name": "Anna"}, {"extension": "102", "name": "Boris"}]
    },
    "scenarios": [{"id": "fallback", "start": "bye", "steps": {"bye": {"kind": "hangup"}}}],
}


# -- the services --------------------------------------------------------------------------


@dataclass
class Api:
    provisioned: Any  # the sip-edge helpers' `Provisioned`: address, stub, accounts
    store: ConfigStore


@pytest.fixture(scope="module")
async def api(postgres_dsn: str) -> AsyncIterator[Api]:
    """The api's Provisioning server: one tenant with 101 and 102 and its routing document."""
    schema = f"api_e2e_{uuid.uuid4().hex[:10]}"
    await migrate(postgres_dsn, schema, edge_helpers.API_MIGRATIONS)
    pool = await create_pool(postgres_dsn, schema=schema, min_size=1, max_size=4)
    store = ConfigStore(pool)
    server = GrpcServer(host="127.0.0.1", port=0, tracer=trace.get_tracer("t"), log=LOG)
    server.add(
        provisioning_pb2_grpc.add_ProvisioningServicer_to_server,
        ProvisioningServicer(store),
        "callmesh.provisioning.v1.Provisioning",
    )
    port = await server.start()
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            provisioned = edge_helpers.Provisioned(
                address, provisioning_pb2_grpc.ProvisioningStub(channel)
            )
            tenant_id, domain = await provisioned.tenant(f"e2e-{uuid.uuid4().hex[:6]}")
            await provisioned.user("caller", tenant_id, domain, "101", "e2e-secret-101")
            await provisioned.user("callee", tenant_id, domain, "102", "e2e-secret-102")
            await store.upsert(
                ROUTING_CONFIGS,
                uuid.uuid4(),
                {"document": ROUTING_DOCUMENT},
                tenant_id=uuid.UUID(tenant_id),
                expected_version=None,
                actor="test",
            )
            yield Api(provisioned, store)
    finally:
        await server.stop(0)
        await pool.close()
        await edge_helpers._drop_schema(postgres_dsn, schema)


@dataclass
class RealRouting:
    address: str  # what `edge_replica` needs of a routing server
    tenants: TenantConfigs


@pytest.fixture(scope="module")
async def routing(postgres_dsn: str, api: Api) -> AsyncIterator[RealRouting]:
    """The routing servicer wired as its app.py wires it, reading documents from the api."""
    schema = f"routing_e2e_{uuid.uuid4().hex[:10]}"
    await migrate(postgres_dsn, schema, ROUTING_MIGRATIONS)
    pool = await create_pool(postgres_dsn, schema=schema, min_size=1, max_size=2)
    tracer = trace.get_tracer("t")
    provisioning = create_channel(api.provisioned.address, tracer=tracer, default_timeout=5.0)
    tenants = TenantConfigs(ProvisioningDocuments(provisioning, 5.0), LOG)
    icm = IcmPrefetch(ContactHistory(pool, 0.5), None, LOG)
    server = GrpcServer(host="127.0.0.1", port=0, tracer=tracer, log=LOG)
    server.add(
        routing_pb2_grpc.add_RoutingServicer_to_server,
        RoutingServicer(tenants, icm, LOG, config_wait_seconds=2.0),
        "callmesh.routing.v1.Routing",
    )
    port = await server.start()
    try:
        yield RealRouting(f"127.0.0.1:{port}", tenants)
    finally:
        await server.stop(0)
        await provisioning.close()
        await pool.close()
        await edge_helpers._drop_schema(postgres_dsn, schema)


@dataclass
class Media:
    address: str
    stub: media_pb2_grpc.MediaControlStub
    ports: tuple[int, int]


@pytest.fixture(scope="module")
async def media(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Media]:
    """The media engine and its MediaControl servicer."""
    tmp = tmp_path_factory.mktemp("media-e2e")
    low, high = 32000, 32199  # below the ephemeral range, apart from the sip-edge tests' range
    bus = EventBus()
    engine = MediaEngine(
        EngineConfig(
            replica_id="media-e2e",
            rtp_host="127.0.0.1",
            advertised_address="127.0.0.1",
            port_min=low,
            port_max=high,
            recording_dir=tmp / "recordings",
        ),
        SoundLibrary(
            sounds_dir=tmp / "sounds",
            moh_dir=tmp / "moh",
            tenant_prompts_dir=tmp / "prompts",
            default_language="en",
        ),
        LOG,
        bus,
    )
    engine.start()
    server = GrpcServer(host="127.0.0.1", port=0, tracer=trace.get_tracer("t"), log=LOG)
    server.add(
        media_pb2_grpc.add_MediaControlServicer_to_server,
        MediaControlServicer(engine, bus, "media-e2e"),
        "callmesh.media.v1.MediaControl",
    )
    port = await server.start()
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield Media(address, media_pb2_grpc.MediaControlStub(channel), (low, high))
    finally:
        await server.stop(0)
        await engine.close()


@pytest.fixture(scope="module")
async def edge(
    postgres_dsn: str, kafka_bootstrap: str, api: Api, routing: RealRouting, media: Media
) -> AsyncIterator[Any]:
    """A sip-edge replica anchoring media on `media`, asking `routing` what to do."""
    schema = f"sip_edge_e2e_{uuid.uuid4().hex[:10]}"
    await migrate(postgres_dsn, schema, edge_helpers.EDGE_MIGRATIONS)
    pool = await create_pool(postgres_dsn, schema=schema, min_size=1, max_size=8)
    await ensure_topics(kafka_bootstrap, ["callmesh.presence.v1", "callmesh.calls.v1"])
    try:
        async with edge_helpers.edge_replica(
            pool,
            schema,
            kafka_bootstrap=kafka_bootstrap,
            provisioning=api.provisioned,
            routing=routing,
            replica_id="edge-e2e-0",
            media_address=media.address,
            sip_edge_digest_algorithms="MD5,SHA-256",
        ) as running:
            yield running
    finally:
        await pool.close()
        await edge_helpers._drop_schema(postgres_dsn, schema)


# -- the phones' media -----------------------------------------------------------------------


def _sdp(port: int) -> bytes:
    lines = [
        "v=0",
        f"o=- {port} 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def _media_target(body: bytes) -> tuple[str, int]:
    """(connection address, audio port) of an SDP body."""
    host = port = None
    for line in body.decode().splitlines():
        if line.startswith("c=IN IP4 "):
            host = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    assert host is not None and port is not None, body
    return host, port


@dataclass
class RtpPhone(asyncio.DatagramProtocol):
    """One phone's RTP socket: sends a tone, keeps every PCMU payload that arrives."""

    received: list[RtpPacket] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append(RtpPacket.parse(data))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    async def send_tone(self, to: tuple[str, int], frequency: float, seconds: float) -> None:
        """PCMU packets of 20 ms, paced in real time (the engine's jitter buffer expects it)."""
        assert self.transport is not None
        samples = tone([frequency], -10.0, seconds)
        payload = ulaw_encode(np.round(samples).astype(np.int16))
        ssrc = uuid.uuid4().int & 0xFFFFFFFF
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(len(payload) // SAMPLES_PER_PACKET):
            chunk = payload[index * SAMPLES_PER_PACKET : (index + 1) * SAMPLES_PER_PACKET]
            packet = RtpPacket(
                payload_type=0,
                sequence_number=(1000 + index) & 0xFFFF,
                timestamp=(index * SAMPLES_PER_PACKET) & 0xFFFFFFFF,
                ssrc=ssrc,
                payload=bytes(chunk),
                marker=index == 0,
            )
            self.transport.sendto(bytes(packet), to)
            await asyncio.sleep(max(0.0, start + (index + 1) * 0.02 - loop.time()))

    def heard(self) -> np.ndarray:
        """What arrived as linear samples, in sequence order, the first 200 ms left out (the
        path settles while both sides start)."""
        audio = [p for p in self.received if p.payload_type == 0]
        audio.sort(key=lambda p: p.sequence_number)
        if not audio:
            return np.zeros(0)
        return np.concatenate([ulaw_decode(p.payload) for p in audio]).astype(np.float64)[1600:]


@contextlib.asynccontextmanager
async def rtp_phone() -> AsyncIterator[RtpPhone]:
    transport, phone = await asyncio.get_running_loop().create_datagram_endpoint(
        RtpPhone, local_addr=("127.0.0.1", 0)
    )
    phone.transport = transport
    try:
        yield phone
    finally:
        transport.close()


# -- the phones' signalling ------------------------------------------------------------------


def _reply(request: SipRequest, status: str, to_tag: str, contact: str, body: bytes = b"") -> bytes:
    """A response to `request` (its Vias, From, Call-ID and CSeq; To with our tag)."""
    to = request.get("to") or ""
    if ";tag=" not in to:
        to = f"{to};tag={to_tag}"
    lines = [f"SIP/2.0 {status}"]
    lines += [f"Via: {via}" for via in request.get_all("via")]
    lines += [
        f"From: {request.get('from')}",
        f"To: {to}",
        f"Call-ID: {request.get('call-id')}",
        f"CSeq: {request.get('cseq')}",
        f"Contact: <{contact}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _next_request(client: Any, method: str, wait: float = 5.0) -> SipRequest:
    while True:
        message = parse_message(await client.receive(wait))
        if isinstance(message, SipRequest) and message.method == method:
            return message


async def _answer_as_callee(client: Any, rtp_port: int) -> tuple[SipRequest, str]:
    """Answer the edge's INVITE with our SDP, resending the 200 until the ACK; returns the
    INVITE and our tag."""
    invite = await _next_request(client, "INVITE")
    tag = new_tag()
    contact = f"sip:102@127.0.0.1:{client.local_port}"
    client.send_raw(_reply(invite, "180 Ringing", tag, contact))
    ok = _reply(invite, "200 OK", tag, contact, _sdp(rtp_port))
    for _ in range(10):
        client.send_raw(ok)
        with contextlib.suppress(TimeoutError):
            await _next_request(client, "ACK", wait=0.5)
            return invite, tag
    raise AssertionError("the edge never acknowledged the callee's 200 OK")


@dataclass
class CallerDialog:
    client: Any
    account: Any
    call_id: str
    from_tag: str
    to: str = ""
    remote_target: str = ""
    route: list[str] = field(default_factory=list)
    cseq: int = 0

    def request(self, method: str, uri: str, *, extra: list[str], body: bytes = b"") -> bytes:
        domain = self.account.domain
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.client.local_port};branch={new_branch()};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.account.extension}@{domain}>;tag={self.from_tag}",
            f"To: {self.to or f'<sip:102@{domain}>'}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {'INVITE' if method == 'ACK' else method}",
            f"Contact: <sip:{self.account.extension}@127.0.0.1:{self.client.local_port}>",
            *extra,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def invite(self, callee: str, rtp_port: int) -> SipResponse:
        """INVITE, 407, INVITE with MD5 digest credentials; returns the 200 OK (ACKed)."""
        uri = f"sip:{callee}@{self.account.domain}"
        self.cseq = 1
        self.client.send_raw(self.request("INVITE", uri, extra=[], body=_sdp(rtp_port)))
        challenge = await self.client.response()
        assert challenge.status_code == 407, challenge
        # The ACK of a non-2xx final answer belongs to the INVITE's transaction (its Via).
        ack = [
            f"ACK {uri} SIP/2.0",
            f"Via: {challenge.get('via')}",
            "Max-Forwards: 70",
            f"From: {challenge.get('from')}",
            f"To: {challenge.get('to')}",
            f"Call-ID: {self.call_id}",
            "CSeq: 1 ACK",
            "Content-Length: 0",
        ]
        self.client.send_raw(("\r\n".join(ack) + "\r\n\r\n").encode())
        offered = [parse_challenge(v) for v in challenge.get_all("proxy-authenticate")]
        md5 = next(c for c in offered if c.algorithm is DigestAlgorithm.MD5)
        credentials = build_authorization(
            md5,
            username=self.account.extension,
            method="INVITE",
            uri=uri,
            password=self.account.password,
        ).to_header_value()
        self.cseq = 2
        self.client.send_raw(
            self.request(
                "INVITE", uri, extra=[f"Proxy-Authorization: {credentials}"], body=_sdp(rtp_port)
            )
        )
        answer: SipResponse = await self.client.response(wait=10.0)
        assert answer.status_code == 200, answer
        self.to = answer.get("to") or ""
        contact = answer.contact
        assert contact is not None
        self.remote_target = str(contact.uri)
        self.route = list(reversed(answer.get_all("record-route")))
        self.client.send_raw(self.ack())
        return answer

    def ack(self) -> bytes:
        return self.request("ACK", self.remote_target, extra=[f"Route: {r}" for r in self.route])

    async def bye(self) -> SipResponse:
        self.cseq += 1
        self.client.send_raw(
            self.request("BYE", self.remote_target, extra=[f"Route: {r}" for r in self.route])
        )
        answer: SipResponse = await self.client.response()
        return answer


# -- the test --------------------------------------------------------------------------------


def _tone_contrast_db(samples: np.ndarray, wanted: float, other: float) -> float:
    powers = tone_powers(samples, (wanted, other))
    return float(10 * np.log10(powers[0] / max(powers[1], 1e-12)))


@pytest.mark.timeout(60)
async def test_extension_calls_extension_and_each_hears_the_other(
    edge: Any, api: Api, routing: RealRouting, media: Media
) -> None:
    caller = api.provisioned.accounts["caller"]
    callee = api.provisioned.accounts["callee"]
    # The first Plan would otherwise wait for the document to load within the edge's
    # routing deadline; a warm cache is what a running routing replica has.
    loaded = await routing.tenants.get(caller.tenant_id, 5.0)
    assert loaded.version == 1

    async with (
        edge_helpers.SipClient(edge.port) as callee_sip,
        edge_helpers.SipClient(edge.port) as caller_sip,
        rtp_phone() as caller_rtp,
        rtp_phone() as callee_rtp,
    ):
        _, registered, _ = await callee_sip.register(callee, expires=120)
        assert registered.status_code == 200, registered

        answering = asyncio.create_task(_answer_as_callee(callee_sip, callee_rtp.port))
        dialog = CallerDialog(caller_sip, caller, f"e2e-{uuid.uuid4().hex}", new_tag())
        try:
            answer = await dialog.invite("102", caller_rtp.port)
            offer, _ = await asyncio.wait_for(answering, 5.0)
        finally:
            answering.cancel()

        # Anchored: each phone is told a media endpoint's address, never the other phone's.
        low, high = media.ports
        caller_sends_to = _media_target(answer.body)
        callee_sends_to = _media_target(offer.body)
        assert low <= caller_sends_to[1] <= high and low <= callee_sends_to[1] <= high
        assert caller_sends_to != callee_sends_to
        load = await media.stub.GetLoad(media_pb.GetLoadRequest())
        assert load.active_endpoints == 2 and load.active_bridges == 1

        await asyncio.gather(
            caller_rtp.send_tone(caller_sends_to, CALLER_HZ, TALK_SECONDS),
            callee_rtp.send_tone(callee_sends_to, CALLEE_HZ, TALK_SECONDS),
        )
        await asyncio.sleep(0.2)  # the last packets in flight through the bridge

        bye = await dialog.bye()
        assert bye.status_code == 200, bye
        callee_bye = await _next_request(callee_sip, "BYE")
        contact = f"sip:102@127.0.0.1:{callee_sip.local_port}"
        callee_sip.send_raw(_reply(callee_bye, "200 OK", "", contact))

    await asyncio.wait_for(edge.runtime.calls.wait_calls_ended(), 5.0)

    heard_by_caller = caller_rtp.heard()
    heard_by_callee = callee_rtp.heard()
    # About 1.4 s of the 1.6 s sent (less the first 200 ms) reaches each side.
    assert len(heard_by_caller) >= 8000, len(caller_rtp.received)
    assert len(heard_by_callee) >= 8000, len(callee_rtp.received)
    caller_contrast = _tone_contrast_db(heard_by_caller, CALLEE_HZ, CALLER_HZ)
    callee_contrast = _tone_contrast_db(heard_by_callee, CALLER_HZ, CALLEE_HZ)
    assert caller_contrast > 30.0, caller_contrast
    assert callee_contrast > 30.0, callee_contrast
    assert abs(dominant_frequency(heard_by_caller) - CALLEE_HZ) < 5.0
    assert abs(dominant_frequency(heard_by_callee) - CALLER_HZ) < 5.0
