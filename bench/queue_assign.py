"""queue_assign: ACD assignment speed of the queue core, in process.

10,000 callers wait across 1,000 queues served by 3,000 agents (each agent a member of
three queues, every strategy in use, announcements on, 5 s wrap-up). Every agent is busy,
so each agent who comes out of wrap-up must be matched against the callers of all their
queues. In a loop, simulated time moves on by 10 ms; `handle_timer(now)` ends the wrap-ups due
(and fires due announcements) and emits the offers for the agents it freed; the offered
agents answer; another agent's call ends (5 s wrap-up starts); a new caller joins so the
line stays at 10,000.

Figures:
  queue_assign      offers (assignment decisions) per second of engine time over the
                    whole cycle (call end, wrap-up end + offer, answer, new caller joins)
  queue_assign_p99  99th percentile of the time of the `handle_timer` call in which an
                    agent became available and its offer was emitted
Goal from issue 7: p99 under 50 ms.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

# Runnable straight from a checkout (`python bench/queue_assign.py`) as well as via make.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services/queue/src"))

from callmesh_queue.core import (
    AgentStatus,
    OfferCall,
    QueueConfig,
    QueueEngine,
    QueueMember,
)

QUEUES = 1_000
AGENTS = 3_000
QUEUES_PER_AGENT = 3
WAITING = 10_000
MEASURE_SECONDS = float(__import__("os").environ.get("QUEUE_ASSIGN_SECONDS", "8"))
STRATEGIES = ["ring_all", "longest_idle", "one_by_one", "cascading", "skills", "efficiency"]


def build(rng: random.Random) -> tuple[QueueEngine, dict[str, list[str]]]:
    members: dict[str, list[QueueMember]] = {f"q{i}": [] for i in range(QUEUES)}
    agent_queues: dict[str, list[str]] = {}
    for n in range(AGENTS):
        agent_id = f"agent{n}"
        queue_ids = rng.sample(sorted(members), QUEUES_PER_AGENT)
        agent_queues[agent_id] = queue_ids
        for queue_id in queue_ids:
            members[queue_id].append(
                QueueMember(
                    agent_id,
                    penalty=rng.choice([0, 0, 0, 1]),
                    skills={"de": rng.randint(1, 5), "en": rng.randint(1, 5)},
                    score=rng.random(),
                )
            )
    engine = QueueEngine()
    for i, (queue_id, queue_members) in enumerate(members.items()):
        engine.configure_queue(
            QueueConfig(
                queue_id,
                members=tuple(queue_members),
                strategy=STRATEGIES[i % len(STRATEGIES)],
                wrap_up_time=5.0,
                position_announce_interval=60.0,
                wait_announce_interval=120.0,
                reject_when_no_agents=False,
            ),
            now=0.0,
        )
    return engine, agent_queues


def answer_offers(engine: QueueEngine, now: float, on_call: list[str]) -> int:
    """Answer every offer in the pending actions by its first agent; returns offers seen."""
    seen = 0
    pending = engine.drain_actions()
    while pending:
        for action in pending:
            if isinstance(action, OfferCall):
                seen += 1
                agent_id = action.agent_ids[0]
                if engine.offer_accepted(action.call_id, agent_id, now):
                    on_call.append(agent_id)
        pending = engine.drain_actions()
    return seen


def main() -> int:
    rng = random.Random(20261123)
    started = time.perf_counter()
    engine, agent_queues = build(rng)
    now = 0.0
    for agent_id in agent_queues:
        engine.agent_login(agent_id, now)
    engine.drain_actions()
    on_call: list[str] = []
    calls = 0
    # Busy every agent: feed callers to free agents' queues until nobody is free.
    for agent_id, queue_ids in agent_queues.items():
        while engine.agent_status(agent_id) is AgentStatus.AVAILABLE:
            calls += 1
            engine.join(rng.choice(queue_ids), f"call{calls}", "+4930", now)
            answer_offers(engine, now, on_call)
    queue_ids = engine.queue_ids()
    for _ in range(WAITING):
        calls += 1
        engine.join(rng.choice(queue_ids), f"call{calls}", "+4930", now)
    engine.drain_actions()
    waiting = sum(len(engine.waiting(q)) for q in queue_ids)
    print(
        f"queue_assign_setup: {time.perf_counter() - started:.1f} s, {len(on_call)} agents busy",
        flush=True,
    )

    latencies: list[float] = []
    engine_time = 0.0
    decisions = 0
    step = 0
    deadline = time.perf_counter() + MEASURE_SECONDS
    while time.perf_counter() < deadline:
        step += 1
        now = step / 100  # 10 ms of simulated time per round, without float drift
        # Wrap-ups that end now free their agents, who are offered the next caller.
        t0 = time.perf_counter()
        engine.handle_timer(now)
        actions = engine.drain_actions()
        elapsed = time.perf_counter() - t0
        engine_time += elapsed
        offered = sum(isinstance(a, OfferCall) for a in actions)
        if offered:
            latencies.append(elapsed)
        decisions += offered
        t0 = time.perf_counter()
        busy_before = len(on_call)
        for action in actions:
            if isinstance(action, OfferCall) and engine.offer_accepted(
                action.call_id, action.agent_ids[0], now
            ):
                on_call.append(action.agent_ids[0])
        decisions += answer_offers(engine, now, on_call)
        # Another call ends; that agent goes into 5 s of wrap-up.
        engine.call_ended(on_call.pop(rng.randrange(len(on_call))), now)
        decisions += answer_offers(engine, now, on_call)
        # One new caller for each one answered keeps the line at 10,000.
        for _ in range(len(on_call) + 1 - busy_before):
            calls += 1
            engine.join(rng.choice(queue_ids), f"call{calls}", "+4930", now)
            decisions += answer_offers(engine, now, on_call)
        engine_time += time.perf_counter() - t0

    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    still_waiting = sum(len(engine.waiting(q)) for q in queue_ids)
    print(f"queue_assign_waiting: {waiting} callers at start, {still_waiting} at end")
    print(f"queue_assign_samples: {len(latencies)} offers measured")
    print(f"queue_assign: {decisions / engine_time:.0f} decisions/s")
    print(f"queue_assign_p50: {p50:.3f} ms")
    print(f"queue_assign_p99: {p99:.3f} ms")
    print(f"queue_assign_total: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
