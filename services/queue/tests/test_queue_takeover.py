"""Two queue replicas as real processes; `kill -9` the one that owns the tenant's queues while
callers wait: the other takes over within seconds and every caller and callback request is
still there, in the same order, reached by re-joining with the `waiting_id`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from callmesh.queue.v1 import queue_pb2, queue_pb2_grpc
from callmesh_queue.store import QueueStore

from .conftest import Caller, new_caller, read_call_events, support_queue

TENANT = "tenant-takeover"
LEASE_SECONDS = 3.0
READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ReplicaProcess:
    replica_id: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path
    channel: grpc.aio.Channel | None = None

    @property
    def stub(self) -> queue_pb2_grpc.QueueStub:
        if self.channel is None:
            self.channel = grpc.aio.insecure_channel(self.address)
        return queue_pb2_grpc.QueueStub(self.channel)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while "event=ready" not in self.log():
            assert self.process.poll() is None, f"{self.replica_id} exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"{self.replica_id} not ready:\n{self.log()}"
            await asyncio.sleep(0.05)


def spawn_replica(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m callmesh_queue`, its log lines in `log_path`."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "callmesh_queue"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
async def replica_processes(
    tmp_path: Path, postgres_dsn: str, kafka_bootstrap: str, queue_schema: str
) -> AsyncIterator[list[ReplicaProcess]]:
    replicas: list[ReplicaProcess] = []
    for name in ("queue-a", "queue-b"):
        grpc_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLMESH_")}
        env.update(
            CALLMESH_REPLICA_ID=name,
            CALLMESH_GRPC_PORT=str(grpc_port),
            CALLMESH_HTTP_PORT=str(free_port()),
            CALLMESH_POSTGRES_DSN=postgres_dsn,
            CALLMESH_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            CALLMESH_QUEUE_DB_SCHEMA=queue_schema,
            CALLMESH_QUEUE_LEASE_SECONDS=str(LEASE_SECONDS),
        )
        log_path = tmp_path / f"{name}.log"
        process = spawn_replica(env, log_path)
        replicas.append(ReplicaProcess(name, f"127.0.0.1:{grpc_port}", process, log_path))
    try:
        yield replicas
    finally:
        for replica in replicas:
            if replica.channel is not None:
                await replica.channel.close()
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
                try:
                    replica.process.wait(10)
                except subprocess.TimeoutExpired:
                    replica.process.kill()
                    replica.process.wait()


async def rejoin(caller: Caller, stub: queue_pb2_grpc.QueueStub, waiting_id: str) -> Any:
    """Re-join by waiting_id, retrying while the survivor has not taken the queues over yet
    (it answers UNAVAILABLE: a redirect to the dead owner, or "being taken over")."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return await caller.open(stub, TENANT, "", waiting_id=waiting_id)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_kill_9_of_the_owner_loses_no_caller_and_keeps_the_order(
    replica_processes: list[ReplicaProcess], store: QueueStore, kafka_bootstrap: str
) -> None:
    await store.put_queue(TENANT, "support", support_queue())
    await asyncio.gather(*(r.wait_ready() for r in replica_processes))
    holder = await store.lease_holder(TENANT)
    assert holder is not None and holder.live
    by_id = {r.replica_id: r for r in replica_processes}
    owner = by_id[holder.owner]
    (survivor,) = [r for r in replica_processes if r is not owner]

    await owner.stub.AgentLogin(
        queue_pb2.AgentLoginRequest(tenant_id=TENANT, agent_user_id="alice")
    )
    talking = new_caller(0)
    talking_joined = await talking.open(owner.stub, TENANT, "support")
    await talking.answer(await talking.read_until("offer"))
    callers = [new_caller(i) for i in (1, 2, 3)]
    joined = []
    for caller in callers:
        joined.append(await caller.open(owner.stub, TENANT, "support"))
        await caller.read_until("announce")
    first, second, third = callers
    await second.send(dtmf=queue_pb2.Dtmf(digit="1"))
    accepted = await second.read_until("callback_accepted")
    assert accepted.position == 2

    owner.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    owner.process.wait()

    # The edge re-joins every caller by waiting_id through the surviving replica.
    first_again = Caller(first.call_id, first.number)
    rejoined = [await rejoin(first_again, survivor.stub, joined[0].waiting_id)]
    takeover_seconds = time.monotonic() - killed_at
    print(f"takeover after kill -9: {takeover_seconds:.2f} s (lease {LEASE_SECONDS} s)")
    assert takeover_seconds < LEASE_SECONDS + 5
    holder = await store.lease_holder(TENANT)
    assert holder is not None and holder.owner == survivor.replica_id
    third_again = Caller(third.call_id, third.number)
    rejoined.append(
        await third_again.open(survivor.stub, TENANT, "", waiting_id=joined[2].waiting_id)
    )
    # Same places (the callback request still holds place 2), same entry times.
    assert [j.position for j in rejoined] == [1, 3]
    assert [j.entered_at for j in rejoined] == [joined[0].entered_at, joined[2].entered_at]
    # The callback request belongs to no stream: re-joining it is refused, but it is there.
    with pytest.raises(grpc.aio.AioRpcError) as callback_rejoin:
        await Caller(second.call_id, second.number).open(
            survivor.stub, TENANT, "", waiting_id=joined[1].waiting_id
        )
    assert callback_rejoin.value.code() == grpc.StatusCode.NOT_FOUND
    stats = await survivor.stub.GetQueueStats(
        queue_pb2.GetQueueStatsRequest(tenant_id=TENANT, queue_ids=["support"])
    )
    (figures,) = stats.queues
    assert (figures.waiting, figures.callbacks_pending, figures.agents_on_call) == (2, 1, 1)

    # Alice's conversation survived too: its stream re-joins and ends it, and the line moves
    # on in the old order: the first caller, then the callback, then the third caller.
    talking_again = Caller(talking.call_id, talking.number)
    resumed = await talking_again.open(
        survivor.stub, TENANT, "", waiting_id=talking_joined.waiting_id
    )
    assert resumed.position == 0
    await talking_again.end_connection()
    await first_again.answer(await first_again.read_until("offer"))
    assert (await third_again.read_until("announce")).position == 2
    await first_again.end_connection()
    state = await survivor.stub.GetAgentState(
        queue_pb2.GetAgentStateRequest(tenant_id=TENANT, agent_user_id="alice")
    )
    assert state.status == queue_pb2.AGENT_STATUS_RINGING  # for the callback request
    stats = await survivor.stub.GetQueueStats(
        queue_pb2.GetQueueStatsRequest(tenant_id=TENANT, queue_ids=["support"])
    )
    assert (stats.queues[0].waiting, stats.queues[0].callbacks_pending) == (1, 1)

    # Events: numbered per call without gaps across the two owners, none lost by the kill.
    events = await read_call_events(kafka_bootstrap, [first.call_id], expected=2)
    assert sorted((e.seq, e.WhichOneof("kind"), e.producer) for e in events) == [
        (1, "queue_joined", owner.replica_id),
        (2, "queue_answered", survivor.replica_id),
    ]
