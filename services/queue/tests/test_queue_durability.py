"""Journal replay, fencing and hand-over between in-process replicas on a real PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import grpc
import pytest
from callmesh.queue.v1 import queue_pb2
from callmesh_queue.shard import Shard
from callmesh_queue.store import LeaseLost, QueueStore

from .conftest import Caller, new_caller, support_queue

TENANT = "tenant-d"


def scripted_ops() -> list[dict[str, Any]]:
    """A morning in a two-agent queue, as the journal would hold it."""
    ops: list[dict[str, Any]] = [
        {
            "op": "configure",
            "now": 100.0,
            "config": support_queue(members=(), strategy="longest_idle", wrap_up_time=5.0),
        },
    ]
    config = support_queue(strategy="longest_idle", wrap_up_time=5.0)
    config["members"].append({"agent_id": "bob", "penalty": 0, "skills": {}, "score": 0.0})
    ops.append({"op": "configure", "now": 100.5, "config": config})
    ops += [
        {"op": "agent_login", "now": 101.0, "agent_id": "alice"},
        {"op": "agent_login", "now": 101.5, "agent_id": "bob"},
    ]
    for i in range(6):
        ops.append(
            {
                "op": "join",
                "now": 110.0 + i,
                "waiting_id": f"w{i}",
                "queue_id": "support",
                "call_id": f"call-{i}",
                "caller_number": f"+4930{i}",
            }
        )
    ops += [
        {"op": "offer_answered", "now": 117.0, "waiting_id": "w0", "offer_id": "w0.1"},
        {"op": "offer_failed", "now": 118.0, "waiting_id": "w1", "offer_id": "w1.1"},
        {"op": "request_callback", "now": 119.0, "waiting_id": "w3", "number": "+49303"},
        {"op": "timer", "now": 140.0},
        {"op": "hangup", "now": 141.0, "waiting_id": "w4"},
        {"op": "connection_ended", "now": 150.0, "waiting_id": "w0", "ended_by": "agent"},
        {"op": "agent_pause", "now": 151.0, "agent_id": "bob", "reason": "lunch"},
        {"op": "timer", "now": 200.0},
        {
            "op": "join",
            "now": 201.0,
            "waiting_id": "w6",
            "queue_id": "support",
            "call_id": "call-6",
            "caller_number": "+49306",
        },
        {"op": "timer", "now": 400.0},
    ]
    return ops


def fingerprint(outcome: Any) -> list[str]:
    return [f"{w}:{i.SerializeToString(deterministic=True).hex()}" for w, i in outcome.instructions]


@pytest.mark.parametrize("cut", [0, 3, 7, 12, 16])
def test_snapshot_plus_journal_replay_continues_exactly_like_the_original(cut: int) -> None:
    ops = scripted_ops()
    original = Shard(TENANT)
    for op in ops[:cut]:
        original.apply(op)
    # Through JSON, as PostgreSQL stores it.
    restored = Shard.restore(TENANT, json.loads(json.dumps(original.to_data())))
    for op in ops[cut:]:
        assert fingerprint(original.apply(op)) == fingerprint(restored.apply(op))
    assert restored.to_data() == original.to_data()
    assert restored.engine.waiting("support") == original.engine.waiting("support")


async def test_a_replica_that_lost_its_lease_cannot_write_and_closes_its_streams(
    start_replica: Any, store: QueueStore, queue_pool: asyncpg.Pool
) -> None:
    old = await start_replica("queue-old")
    await store.put_queue(TENANT, "support", support_queue())
    await old.runtime.lease_tick()
    await old.stub.AgentLogin(queue_pb2.AgentLoginRequest(tenant_id=TENANT, agent_user_id="alice"))
    waiting = new_caller(1)
    joined = await waiting.open(old.stub, TENANT, "support")

    # The old owner stalls past its lease (here: the lease simply lapses) and a new replica
    # takes the tenant over and restores it.
    await queue_pool.execute(
        "UPDATE leases SET expires_at = '-infinity' WHERE tenant_id = $1", TENANT
    )
    new = await start_replica("queue-new")
    assert new.runtime.owned_tenants() == [TENANT]

    # The old owner still believes it owns the tenant; its next write is fenced off.
    with pytest.raises(LeaseLost):
        await store.append(TENANT, "queue-old", 1, 999, {"op": "timer", "now": 0.0}, [])
    late = new_caller(2)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await late.open(old.stub, TENANT, "support")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # ... and the streams it held are closed so the edge re-joins elsewhere.
    with pytest.raises(grpc.aio.AioRpcError) as closed:
        while True:
            await waiting.read(5.0)
    assert closed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert old.runtime.owned_tenants() == []

    again = Caller(waiting.call_id, waiting.number)
    rejoined = await again.open(new.stub, TENANT, "", waiting_id=joined.waiting_id)
    assert (rejoined.position, rejoined.entered_at) == (1, joined.entered_at)
    # Nothing the old owner wrote after losing the lease reached the journal.
    generations = await queue_pool.fetch(
        "SELECT DISTINCT generation FROM journal WHERE tenant_id = $1", TENANT
    )
    assert {row["generation"] for row in generations} <= {2}


async def test_draining_hands_the_queues_over_at_once(
    start_replica: Any, store: QueueStore
) -> None:
    first = await start_replica("queue-1")
    await store.put_queue(TENANT, "support", support_queue())
    await first.runtime.lease_tick()
    await first.stub.AgentLogin(
        queue_pb2.AgentLoginRequest(tenant_id=TENANT, agent_user_id="alice")
    )
    caller = new_caller(1)
    joined = await caller.open(first.stub, TENANT, "support")
    second = await start_replica("queue-2")
    assert second.runtime.owned_tenants() == []
    await first.runtime.stop()  # SIGTERM's drain hook
    await second.runtime.lease_tick()
    assert second.runtime.owned_tenants() == [TENANT]
    again = Caller(caller.call_id, caller.number)
    rejoined = await again.open(second.stub, TENANT, "", waiting_id=joined.waiting_id)
    assert rejoined.position == 1


def test_a_new_local_day_starts_the_today_figures_again() -> None:
    shard = Shard(TENANT)
    ops = [op for op in scripted_ops() if op["now"] <= 141.0]
    for op in ops:
        shard.apply(op)
    shard.apply({"op": "new_day", "now": 141.5, "queue_id": "support", "day": "2026-11-23"})
    before = shard.engine.figures("support", 142.0)
    assert (before.answered, before.abandoned) == (1, 1)  # the first day only gets recorded
    shard.apply({"op": "new_day", "now": 142.0, "queue_id": "support", "day": "2026-11-24"})
    after = shard.engine.figures("support", 142.0)
    assert (after.answered, after.abandoned, after.waiting) == (0, 0, before.waiting)
    restored = Shard.restore(TENANT, json.loads(json.dumps(shard.to_data())))
    assert restored.counter_days == {"support": "2026-11-24"}
