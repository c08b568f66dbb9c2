"""A running edge against real PostgreSQL, Kafka and the api's real `Provisioning` server.

`provisioning` serves the api's own `ProvisioningServicer` over `ConfigStore` on a grpc.aio
server on port 0, against a freshly migrated schema; `edge` is the sip-edge SIP side
(`app.start_edge`) on a free port with its own fresh `sip_edge` schema. `SipClient` is a small
UDP/TCP SIP client for the tests, answering digest challenges with the core's
`build_authorization` (MD5 or SHA-256).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from callmesh.provisioning.v1 import provisioning_pb2 as pb
from callmesh.provisioning.v1 import provisioning_pb2_grpc
from callmesh.routing.v1 import routing_pb2, routing_pb2_grpc
from callmesh_api.provisioning import ProvisioningServicer
from callmesh_api.store import ConfigStore
from callmesh_core.db import create_pool, migrate
from callmesh_core.grpc_server import GrpcServer
from callmesh_core.kafka import EventProducer, ensure_topics
from callmesh_core.logging import EventLogger
from callmesh_sip_edge.app import EdgeRuntime, start_edge
from callmesh_sip_edge.config import SipEdgeSettings
from callmesh_sip_edge.sip.digest import DigestAlgorithm, build_authorization, parse_challenge
from callmesh_sip_edge.sip.message import SipResponse, new_branch, new_call_id, new_tag
from callmesh_sip_edge.sip.parser import StreamFramer, parse_message
from callmesh_sip_edge.sip.transaction import TimerSettings
from opentelemetry import trace

LOG = EventLogger(logging.getLogger("callmesh.test.sip_edge"))
API_MIGRATIONS = Path(__file__).resolve().parents[2] / "api" / "src" / "callmesh_api" / "migrations"
EDGE_MIGRATIONS = Path(__file__).resolve().parents[1] / "src" / "callmesh_sip_edge" / "migrations"
RFC4475 = Path(__file__).resolve().parent / "data" / "rfc4475"


async def _drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@dataclass
class Account:
    tenant_id: str
    domain: str
    extension: str
    password: str
    user_id: str


@dataclass
class Provisioned:
    address: str
    stub: provisioning_pb2_grpc.ProvisioningStub
    accounts: dict[str, Account] = field(default_factory=dict)

    async def tenant(self, slug: str, domain: str | None = None) -> tuple[str, str]:
        reply = await self.stub.UpsertTenant(
            pb.UpsertTenantRequest(
                tenant=pb.Tenant(
                    slug=slug, name=slug, sip_domain=domain or f"{slug}.test", enabled=True
                )
            )
        )
        return reply.tenant.tenant_id, reply.tenant.sip_domain

    async def user(
        self, name: str, tenant_id: str, domain: str, extension: str, password: str
    ) -> Account:
        material = f"{extension}:{domain}:{password}".encode()
        reply = await self.stub.UpsertUser(
            pb.UpsertUserRequest(
                user=pb.User(
                    tenant_id=tenant_id,
                    extension=extension,
                    name=name,
                    sip_credentials=pb.DigestCredentials(
                        ha1_md5=hashlib.md5(material).hexdigest(),
                        ha1_sha256=hashlib.sha256(material).hexdigest(),
                    ),
                    enabled=True,
                )
            )
        )
        account = Account(tenant_id, domain, extension, password, reply.user.user_id)
        self.accounts[name] = account
        return account


@pytest.fixture(scope="module")
async def provisioning(postgres_dsn: str) -> AsyncIterator[Provisioned]:
    """The api's real Provisioning server with two tenants sharing extension 101."""
    schema = f"api_sipedge_{uuid.uuid4().hex[:10]}"
    await migrate(postgres_dsn, schema, API_MIGRATIONS)
    pool = await create_pool(postgres_dsn, schema=schema, min_size=1, max_size=4)
    server = GrpcServer(host="127.0.0.1", port=0, tracer=trace.get_tracer("t"), log=LOG)
    server.add(
        provisioning_pb2_grpc.add_ProvisioningServicer_to_server,
        ProvisioningServicer(ConfigStore(pool)),
        "callmesh.provisioning.v1.Provisioning",
    )
    port = await server.start()
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            provisioned = Provisioned(address, provisioning_pb2_grpc.ProvisioningStub(channel))
            suffix = uuid.uuid4().hex[:6]
            acme_id, acme = await provisioned.tenant(f"acme-{suffix}")
            globex_id, globex = await provisioned.tenant(f"globex-{suffix}")
            await provisioned.user("acme101", acme_id, acme, "101", "acme-secret-101")
            await provisioned.user("acme102", acme_id, acme, "102", "acme-secret-102")
            await provisioned.user("acme103", acme_id, acme, "103", "acme-secret-103")
            await provisioned.user("acme104", acme_id, acme, "104", "acme-secret-104")
            await provisioned.user("globex101", globex_id, globex, "101", "globex-secret-101")
            # sipsak resolves the domain of its target URI even with an outbound proxy, so its
            # tenant's SIP domain is one /etc/hosts knows.
            local_id, local = await provisioned.tenant(f"local-{suffix}", "localhost")
            await provisioned.user("local201", local_id, local, "201", "local-secret-201")
            yield provisioned
    finally:
        await server.stop(0)
        await pool.close()
        await _drop_schema(postgres_dsn, schema)


class RoutingTestDouble(routing_pb2_grpc.RoutingServicer):
    """A test double of the internal `Routing` contract (not the routing service).

    Plan: dial the called number as an extension of the caller's tenant (all its contacts at
    once, `dial_timeout` seconds). Continue: no more verbs (hang up normally). `stall` makes
    every answer come that many seconds late (routing "down" for an edge with a shorter
    deadline). Every request is kept for the tests to inspect.
    """

    def __init__(self) -> None:
        self.plans: list[routing_pb2.PlanRequest] = []
        self.continues: list[routing_pb2.ContinueRequest] = []
        self.stall = 0.0
        self.dial_timeout = 20
        # Verbs to plan instead of the dial, for callees named in it (verb executor tests).
        self.scripted: dict[str, list[routing_pb2.Verb]] = {}

    async def Plan(
        self, request: routing_pb2.PlanRequest, context: object
    ) -> routing_pb2.PlanReply:
        self.plans.append(request)
        if self.stall:
            await asyncio.sleep(self.stall)
        scripted = self.scripted.get(request.call.callee_number)
        if scripted is not None:
            return routing_pb2.PlanReply(verbs=scripted, state=b"scripted")
        dial = routing_pb2.DialVerb(
            targets=[
                routing_pb2.DialTarget(
                    extension=routing_pb2.ExtensionTarget(extension=request.call.callee_number)
                )
            ],
            strategy=routing_pb2.RING_STRATEGY_ALL_AT_ONCE,
        )
        dial.timeout.FromSeconds(self.dial_timeout)
        return routing_pb2.PlanReply(
            verbs=[routing_pb2.Verb(id="dial-1", dial=dial)], state=b"after-dial", reason="test"
        )

    async def Continue(
        self, request: routing_pb2.ContinueRequest, context: object
    ) -> routing_pb2.PlanReply:
        self.continues.append(request)
        if self.stall:
            await asyncio.sleep(self.stall)
        return routing_pb2.PlanReply()

    def plan_for_sip_call_id(self, sip_call_id: str) -> routing_pb2.PlanRequest:
        return next(p for p in self.plans if p.call.sip_call_id == sip_call_id)


@dataclass
class RoutingServer:
    address: str
    double: RoutingTestDouble


@pytest.fixture(scope="module")
async def routing() -> AsyncIterator[RoutingServer]:
    double = RoutingTestDouble()
    server = GrpcServer(host="127.0.0.1", port=0, tracer=trace.get_tracer("t"), log=LOG)
    server.add(
        routing_pb2_grpc.add_RoutingServicer_to_server, double, "callmesh.routing.v1.Routing"
    )
    port = await server.start()
    try:
        yield RoutingServer(f"127.0.0.1:{port}", double)
    finally:
        await server.stop(0)


@dataclass
class RunningEdge:
    runtime: EdgeRuntime
    pool: asyncpg.Pool
    schema: str

    @property
    def port(self) -> int:
        return self.runtime.port


NONCE_SECRET = "test-nonce-secret-0123456789"


@contextlib.asynccontextmanager
async def edge_replica(
    pool: asyncpg.Pool,
    schema: str,
    *,
    kafka_bootstrap: str,
    provisioning: Provisioned,
    routing: RoutingServer,
    replica_id: str,
    media_address: str | None = None,
    timers: TimerSettings | None = None,
    **settings: Any,
) -> AsyncIterator[RunningEdge]:
    """One sip-edge replica in this process on `pool`'s schema, with its own producer and
    channels to the real Provisioning server and the routing server; stopped afterwards."""
    producer = EventProducer(bootstrap_servers=kafka_bootstrap, tracer=trace.get_tracer("t"))
    await producer.start()
    config = SipEdgeSettings(
        replica_id=replica_id,
        sip_host="127.0.0.1",
        sip_edge_provisioning_address=provisioning.address,
        sip_edge_nonce_secret=NONCE_SECRET,
        **settings,
    )
    channels = [grpc.aio.insecure_channel(provisioning.address)]
    channels.append(grpc.aio.insecure_channel(routing.address))
    media = grpc.aio.insecure_channel(media_address) if media_address else None
    if media is not None:
        channels.append(media)
    try:
        runtime = await start_edge(
            config,
            pool=pool,
            producer=producer,
            provisioning=channels[0],
            routing=channels[1],
            media=media,
            log=LOG,
            sip_port=0,
            timers=timers,
        )
        try:
            yield RunningEdge(runtime, pool, schema)
        finally:
            await runtime.stop()
    finally:
        for channel in channels:
            await channel.close()
        await producer.stop()


@pytest.fixture(scope="module")
async def edge(
    postgres_dsn: str, kafka_bootstrap: str, provisioning: Provisioned, routing: RoutingServer
) -> AsyncIterator[RunningEdge]:
    schema = f"sip_edge_test_{uuid.uuid4().hex[:10]}"
    await migrate(postgres_dsn, schema, EDGE_MIGRATIONS)
    pool = await create_pool(postgres_dsn, schema=schema, min_size=1, max_size=16)
    await ensure_topics(kafka_bootstrap, ["callmesh.presence.v1", "callmesh.calls.v1"])
    try:
        async with edge_replica(
            pool,
            schema,
            kafka_bootstrap=kafka_bootstrap,
            provisioning=provisioning,
            routing=routing,
            replica_id="edge-test-0",
            registration_sweep_seconds=0.5,
            registration_min_expires=2,
        ) as running:
            yield running
    finally:
        await pool.close()
        await _drop_schema(postgres_dsn, schema)


@pytest.fixture(scope="module")
async def md5_first_edge(
    edge: RunningEdge, kafka_bootstrap: str, provisioning: Provisioned, routing: RoutingServer
) -> AsyncIterator[RunningEdge]:
    """A second replica on the same `sip_edge` schema, offering MD5 first (for sipp 3.6)."""
    async with edge_replica(
        edge.pool,
        edge.schema,
        kafka_bootstrap=kafka_bootstrap,
        provisioning=provisioning,
        routing=routing,
        replica_id="edge-test-1",
        sip_edge_digest_algorithms="MD5,SHA-256",
        registration_sweep_seconds=0.5,
        registration_min_expires=2,
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def torture_edge(
    edge: RunningEdge, kafka_bootstrap: str, provisioning: Provisioned, routing: RoutingServer
) -> AsyncIterator[RunningEdge]:
    """A third replica with fast transaction timers (T1 = 20 ms, so a finished transaction
    is forgotten after 64*T1 = 1.28 s): the RFC 4475 files reuse branches, and a file sent
    while an earlier one's transaction lives would be (rightly) taken as its retransmission."""
    async with edge_replica(
        edge.pool,
        edge.schema,
        kafka_bootstrap=kafka_bootstrap,
        provisioning=provisioning,
        routing=routing,
        replica_id="edge-test-2",
        timers=TimerSettings(t1=0.02, t2=0.16, t4=0.1, timer_d=0.5),
    ) as running:
        yield running


# -- a small SIP client ----------------------------------------------------------------------


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queue.put_nowait(data)


class SipClient:
    """Sends requests from ``local_host`` to the edge over UDP (or TCP) and reads answers."""

    def __init__(
        self,
        edge_port: int,
        *,
        local_host: str = "127.0.0.1",
        tcp: bool = False,
        local_port: int = 0,
    ):
        self.edge_port = edge_port
        self.local_host = local_host
        self.tcp = tcp
        self.local_port = local_port
        self._udp: asyncio.DatagramTransport | None = None
        self._datagrams = _Datagrams()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._framer = StreamFramer()
        self._frames: list[bytes] = []
        self.call_id = new_call_id("test")
        self.from_tag = new_tag()
        self.cseq = 0

    async def __aenter__(self) -> SipClient:
        loop = asyncio.get_running_loop()
        if self.tcp:
            self._reader, self._writer = await asyncio.open_connection(
                "127.0.0.1", self.edge_port, local_addr=(self.local_host, self.local_port)
            )
            self.local_port = self._writer.get_extra_info("sockname")[1]
        else:
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: self._datagrams, local_addr=(self.local_host, self.local_port)
            )
            self.local_port = self._udp.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._udp is not None:
            self._udp.close()
            # The socket is closed a loop turn later; its port may be reused right after.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        if self._writer is not None:
            self._writer.close()

    def send_raw(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)
        else:
            assert self._udp is not None
            self._udp.sendto(data, ("127.0.0.1", self.edge_port))

    async def receive(self, wait: float = 5.0) -> bytes:
        if self._reader is None:
            return await asyncio.wait_for(self._datagrams.queue.get(), wait)
        while not self._frames:
            data = await asyncio.wait_for(self._reader.read(65536), wait)
            if not data:
                raise ConnectionError("closed")
            self._frames.extend(self._framer.feed(data).messages)
        return self._frames.pop(0)

    async def response(self, wait: float = 5.0) -> SipResponse:
        while True:
            message = parse_message(await self.receive(wait), stream=self._reader is not None)
            if isinstance(message, SipResponse) and message.status_code >= 200:
                return message

    def register_request(
        self,
        account: Account,
        *,
        contact: str | None = None,
        expires: int | None = 60,
        authorization: str | None = None,
        username: str | None = None,
        extra: list[tuple[str, str]] = (),  # type: ignore[assignment]
    ) -> bytes:
        self.cseq += 1
        transport = "TCP" if self.tcp else "UDP"
        aor = f"sip:{username or account.extension}@{account.domain}"
        contact = contact or f"<sip:{account.extension}@{self.local_host}:{self.local_port}>"
        lines = [
            f"REGISTER sip:{account.domain} SIP/2.0",
            f"Via: SIP/2.0/{transport} {self.local_host}:{self.local_port}"
            f";branch={new_branch()};rport",
            "Max-Forwards: 70",
            f"From: <{aor}>;tag={self.from_tag}",
            f"To: <{aor}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: {contact}",
        ]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        lines.extend(f"{name}: {value}" for name, value in extra)
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def register(
        self,
        account: Account,
        *,
        password: str | None = None,
        algorithm: DigestAlgorithm = DigestAlgorithm.MD5,
        contact: str | None = None,
        expires: int | None = 60,
        username: str | None = None,
    ) -> tuple[SipResponse, SipResponse, str]:
        """Challenge, then answer it; (challenge, final answer, Authorization sent)."""
        self.send_raw(
            self.register_request(account, contact=contact, expires=expires, username=username)
        )
        challenge = await self.response()
        assert challenge.status_code == 401, challenge
        offered = [parse_challenge(v) for v in challenge.get_all("www-authenticate")]
        chosen = next(c for c in offered if c.algorithm is algorithm)
        user = username or account.extension
        credentials = build_authorization(
            chosen,
            username=user,
            method="REGISTER",
            uri=f"sip:{account.domain}",
            password=account.password if password is None else password,
        )
        header = credentials.to_header_value()
        self.send_raw(
            self.register_request(
                account, contact=contact, expires=expires, authorization=header, username=username
            )
        )
        return challenge, await self.response(), header


def free_udp_tcp_port(host: str = "127.0.0.1") -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError("no free port")


@pytest.fixture
def sip_client() -> type[SipClient]:
    return SipClient
