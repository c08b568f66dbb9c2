"""Real PostgreSQL schemas, real grpc.aio servers on port 0 and a scripted edge for the
queue service's adapter tests."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from callmesh.events.v1 import calls_pb2
from callmesh.queue.v1 import queue_pb2, queue_pb2_grpc
from callmesh_core.db import create_pool, migrate
from callmesh_core.grpc_server import GrpcServer
from callmesh_core.kafka import EventProducer
from callmesh_core.logging import EventLogger
from callmesh_queue.core import QueueConfig, QueueMember
from callmesh_queue.core.snapshot import config_to_data
from callmesh_queue.events import CALLS_TOPIC, CallEventOutboxRelay
from callmesh_queue.runtime import QueueRuntime
from callmesh_queue.servicer import QueueServicer
from callmesh_queue.store import QueueStore
from opentelemetry import trace

READ_TIMEOUT = 10.0


@pytest.fixture
async def queue_schema(postgres_dsn: str) -> AsyncIterator[str]:
    """A fresh schema with the queue migrations applied; dropped afterwards."""
    schema = f"queue_test_{uuid.uuid4().hex[:10]}"
    await migrate(postgres_dsn, schema, "callmesh_queue")
    yield schema
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def queue_pool(postgres_dsn: str, queue_schema: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(postgres_dsn, schema=queue_schema, min_size=1, max_size=8)
    yield pool
    await pool.close()


@pytest.fixture
def store(queue_pool: asyncpg.Pool) -> QueueStore:
    return QueueStore(queue_pool)


def support_queue(queue_id: str = "support", **overrides: Any) -> dict[str, Any]:
    """A one-agent FCFS queue whose callers hear their position on joining and on moving up."""
    settings: dict[str, Any] = {
        "members": (QueueMember("alice"),),
        "strategy": "ring_all",
        "ring_timeout": 20.0,
        "position_announce_interval": 60.0,
        "wait_announce_interval": 120.0,
        "announce_on_join": True,
        "announce_on_improvement": True,
        "announce_min_gap": 0.0,
        "default_handle_time": 60.0,
    }
    settings.update(overrides)
    return config_to_data(QueueConfig(queue_id, **settings))


CLOSE_STEP_SECONDS = 15.0


@dataclass
class Replica:
    """One queue replica in this process: runtime + servicer on a real gRPC server."""

    runtime: QueueRuntime
    server: GrpcServer
    channel: grpc.aio.Channel
    stub: queue_pb2_grpc.QueueStub
    address: str
    relay: CallEventOutboxRelay | None = None

    async def close(self, *, release: bool = True) -> None:
        # Each step is bounded, so a stuck shutdown fails the test with its name instead of
        # hanging the whole suite.
        await asyncio.wait_for(self.runtime.stop(release=release), CLOSE_STEP_SECONDS)
        if self.relay is not None:
            await asyncio.wait_for(self.relay.stop(), CLOSE_STEP_SECONDS)
        await asyncio.wait_for(self.channel.close(), CLOSE_STEP_SECONDS)
        await asyncio.wait_for(self.server.stop(0), CLOSE_STEP_SECONDS)


ReplicaFactory = Callable[..., Any]


@pytest.fixture
async def start_replica(
    queue_pool: asyncpg.Pool,
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Replica] = []
    producers: list[EventProducer] = []

    async def start(
        replica_id: str = "queue-0",
        *,
        lease_seconds: float = 3.0,
        kafka_bootstrap: str | None = None,
        rejoin_grace_seconds: float = 30.0,
    ) -> Replica:
        log = EventLogger(logging.getLogger(f"callmesh.test.queue.{replica_id}"))
        server = GrpcServer(host="127.0.0.1", port=0, tracer=trace.get_tracer("test"), log=log)
        # The address is only known once bound, and the runtime must know it before it
        # takes leases: bind first, then start the runtime.
        runtime = QueueRuntime(
            QueueStore(queue_pool),
            replica_id=replica_id,
            address="",
            log=log,
            lease_seconds=lease_seconds,
            rejoin_grace_seconds=rejoin_grace_seconds,
        )
        server.add(
            queue_pb2_grpc.add_QueueServicer_to_server,
            QueueServicer(runtime, log),
            "callmesh.queue.v1.Queue",
        )
        port = await server.start()
        address = f"127.0.0.1:{port}"
        runtime.address = address
        relay = None
        if kafka_bootstrap is not None:
            producer = EventProducer(
                bootstrap_servers=kafka_bootstrap, tracer=trace.get_tracer("test")
            )
            await producer.start()
            producers.append(producer)
            relay = CallEventOutboxRelay(queue_pool, producer, log, poll_seconds=0.5)
            await relay.start()
        await runtime.start()
        channel = grpc.aio.insecure_channel(address)
        replica = Replica(
            runtime, server, channel, queue_pb2_grpc.QueueStub(channel), address, relay
        )
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await replica.close()
    for producer in producers:
        await producer.stop()


@dataclass
class Caller:
    """The edge's side of one caller's `Wait` stream, scripted by a test."""

    call_id: str
    number: str
    call: Any = None
    received: list[queue_pb2.QueueInstruction] = field(default_factory=list)

    async def open(
        self, stub: queue_pb2_grpc.QueueStub, tenant_id: str, queue_id: str, **join: Any
    ) -> queue_pb2.Joined:
        self.call = stub.Wait()
        await self.call.write(
            queue_pb2.CallerMessage(
                join=queue_pb2.Join(
                    tenant_id=tenant_id,
                    queue_id=queue_id,
                    call_id=self.call_id,
                    caller_number=self.number,
                    **join,
                )
            )
        )
        first = await self.read()
        assert first.WhichOneof("kind") == "joined", first
        return first.joined

    async def read(self, wait: float = READ_TIMEOUT) -> queue_pb2.QueueInstruction:
        message = await asyncio.wait_for(self.call.read(), wait)
        assert message is not grpc.aio.EOF, f"{self.call_id}: stream ended"
        self.received.append(message)
        return message  # type: ignore[no-any-return]

    async def read_until(self, kind: str, wait: float = READ_TIMEOUT) -> Any:
        """Read until an instruction of `kind` arrives; returns its payload."""
        while True:
            message = await self.read(wait)
            if message.WhichOneof("kind") == kind:
                return getattr(message, kind)

    async def send(self, **kind: Any) -> None:
        await self.call.write(queue_pb2.CallerMessage(**kind))

    async def answer(self, offer: queue_pb2.Offer) -> queue_pb2.Connect:
        await self.send(
            offer_update=queue_pb2.OfferUpdate(
                offer_id=offer.offer_id, status=queue_pb2.OFFER_STATUS_ANSWERED
            )
        )
        connect: queue_pb2.Connect = await self.read_until("connect")
        assert connect.offer_id == offer.offer_id
        return connect

    async def end_connection(self) -> None:
        await self.send(
            connection_ended=queue_pb2.ConnectionEnded(ended_by=queue_pb2.ENDED_BY_AGENT)
        )
        await self.read_until("finish")

    async def ended(self, wait: float = READ_TIMEOUT) -> bool:
        """Whether the queue ends the stream (normally) within `wait` seconds, reading what is
        still on its way."""
        while True:
            message = await asyncio.wait_for(self.call.read(), wait)
            if message is grpc.aio.EOF:
                return await self.call.code() == grpc.StatusCode.OK  # type: ignore[no-any-return]
            self.received.append(message)

    def announcements(self) -> list[int]:
        return [
            m.announce.position
            for m in self.received
            if m.WhichOneof("kind") == "announce" and m.announce.position
        ]


def new_caller(index: int) -> Caller:
    return Caller(call_id=str(uuid.uuid4()), number=f"+49301000{index:03d}")


async def read_call_events(
    bootstrap: str, call_ids: Sequence[str], expected: int, within: float = 20.0
) -> list[calls_pb2.CallEvent]:
    """Queue events of these calls on callmesh.calls.v1 until `expected` have arrived."""
    wanted = set(call_ids)
    consumer = AIOKafkaConsumer(
        CALLS_TOPIC, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    events: list[calls_pb2.CallEvent] = []
    try:
        deadline = asyncio.get_running_loop().time() + within
        while len(events) < expected:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            batches = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for records in batches.values():
                for record in records:
                    if record.key is not None and record.key.decode() in wanted:
                        assert record.value is not None
                        events.append(calls_pb2.CallEvent.FromString(record.value))
    finally:
        await consumer.stop()
    return events
