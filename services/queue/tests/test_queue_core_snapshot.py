"""Snapshot/restore continuity and engine invariants under random event streams.

A seeded driver plays a random but reproducible mix of joins, hang-ups, callback requests,
answers, declines, call ends, pauses, log-ins and log-outs and time passing against queues
that share agents. After every step the engine's invariants are checked; half-way the
engine is exported to JSON, restored into a new engine, and both are then fed the same
events: they must produce the same actions, step by step, and end in the same state.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from callmesh_queue.core import (
    Action,
    AgentStatus,
    BadSnapshot,
    CancelOffer,
    ConnectCaller,
    DialCustomer,
    NoAnswerPolicy,
    OfferCall,
    QueueConfig,
    QueueEngine,
    QueueMember,
)
from callmesh_queue.core.model import EntryKind

AGENTS = [f"a{i}" for i in range(1, 9)]


def build_engine() -> QueueEngine:
    engine = QueueEngine()
    configs = [
        QueueConfig("ra", members=tuple(QueueMember(a) for a in AGENTS[0:4]), weight=2),
        QueueConfig(
            "li",
            members=tuple(QueueMember(a, penalty=i % 2) for i, a in enumerate(AGENTS[2:6])),
            strategy="longest_idle",
            wrap_up_time=5.0,
            position_announce_interval=20.0,
            wait_announce_interval=45.0,
            announce_min_gap=5.0,
        ),
        QueueConfig(
            "sk",
            members=(
                QueueMember("a1", skills={"de": 3, "en": 5}),
                QueueMember("a5", skills={"de": 5}),
                QueueMember("a7", skills={"en": 2, "fr": 4}),
            ),
            strategy="skills",
            callback_max_attempts=2,
            callback_retry_delay=10.0,
            callback_max_wait=300.0,
        ),
        QueueConfig(
            "cas",
            members=tuple(QueueMember(a) for a in ("a2", "a6", "a8")),
            strategy="cascading",
            cascade_step=3.0,
            ring_timeout=8.0,
            no_answer_policy=NoAnswerPolicy.PAUSE,
            max_wait=200.0,
            retry_delay=3.0,
            reject_when_no_agents=False,
        ),
        QueueConfig(
            "eff",
            members=tuple(QueueMember(a, score=(i * 7) % 5) for i, a in enumerate(AGENTS)),
            strategy="efficiency",
            priority_callers={"+vip": 3},
            max_length=6,
            predicted_wait_threshold=900.0,
            leave_when_no_agents=True,
            wrap_up_time=2.0,
        ),
        QueueConfig(
            "rr",
            members=tuple(QueueMember(a) for a in AGENTS[4:8]),
            strategy="one_by_one",
            caller_order="fifo",
            ring_timeout=6.0,
        ),
    ]
    for config in configs:
        engine.configure_queue(config, now=0.0)
    for agent_id in AGENTS:
        engine.agent_login(agent_id, 0.0)
    return engine


class Driver:
    """Chooses events from a seeded RNG and from what the engine asked for so far."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.calls = 0
        self.ringing: dict[str, list[str]] = {}
        self.on_call: list[str] = []
        self.dialing: dict[str, str] = {}

    def observe(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, OfferCall):
                self.ringing.setdefault(action.call_id, []).extend(action.agent_ids)
            elif isinstance(action, CancelOffer):
                rung = self.ringing.get(action.call_id, [])
                for agent_id in action.agent_ids:
                    if agent_id in rung:
                        rung.remove(agent_id)
            elif isinstance(action, ConnectCaller):
                self.ringing.pop(action.call_id, None)
                self.on_call.append(action.agent_id)
            elif isinstance(action, DialCustomer):
                self.ringing.pop(action.call_id, None)
                self.on_call.append(action.agent_id)
                self.dialing[action.call_id] = action.agent_id

    def step(self, engine: QueueEngine) -> list[Action]:
        rng = self.rng
        roll = rng.random()
        waiting = [c for q in engine.queue_ids() for c in engine.waiting(q)]
        offered = sorted((c, a) for c, agents in self.ringing.items() for a in agents)
        if roll < 0.22:
            queue_id = rng.choice(engine.queue_ids())
            self.calls += 1
            skills = (
                rng.choice([None, {"de": 3}, {"en": 2}, {"fr": 1}]) if queue_id == "sk" else None
            )
            engine.join(
                queue_id,
                f"call{self.calls}",
                rng.choice(["+1", "+2", "+3", "+vip"]),
                self.now,
                required_skills=skills,
            )
        elif roll < 0.27 and waiting:
            engine.leave(rng.choice(waiting), self.now)
        elif roll < 0.32 and waiting:
            engine.request_callback(rng.choice(waiting), self.now)
        elif roll < 0.47 and offered:
            call_id, agent_id = rng.choice(offered)
            engine.offer_accepted(call_id, agent_id, self.now)
        elif roll < 0.52 and offered:
            call_id, agent_id = rng.choice(offered)
            engine.offer_declined(call_id, agent_id, self.now)
        elif roll < 0.64 and self.on_call:
            agent_id = self.on_call.pop(rng.randrange(len(self.on_call)))
            for call_id, dialling_agent in list(self.dialing.items()):
                if dialling_agent == agent_id:
                    del self.dialing[call_id]
            engine.call_ended(agent_id, self.now)
        elif roll < 0.70 and self.dialing:
            call_id = rng.choice(sorted(self.dialing))
            agent_id = self.dialing.pop(call_id)
            if rng.random() < 0.5:
                engine.callback_customer_answered(call_id, self.now)
            else:
                self.on_call.remove(agent_id)
                engine.callback_customer_failed(call_id, self.now)
        elif roll < 0.78:
            agent_id = rng.choice(AGENTS)
            status = engine.agent_status(agent_id)
            if status is AgentStatus.LOGGED_OUT:
                engine.agent_login(agent_id, self.now)
            elif status is AgentStatus.PAUSED:
                engine.agent_unpause(agent_id, self.now)
            elif rng.random() < 0.8:
                engine.agent_pause(agent_id, "break", self.now)
            else:
                engine.agent_logout(agent_id, self.now)
        else:
            self.now += rng.choice([0.5, 1.0, 3.0, 8.0, 20.0])
            engine.handle_timer(self.now)
        actions = engine.drain_actions()
        self.observe(actions)
        return actions


def check_invariants(engine: QueueEngine) -> None:
    ringing_in_offers: dict[str, int] = {}
    for offer in engine._offers.values():
        entry = engine._entries[offer.call_id]
        assert entry.offer_id == offer.offer_id
        assert offer.ringing, "an offer without ringing agents must have moved on"
        for agent_id in offer.ringing:
            assert agent_id not in ringing_in_offers, f"{agent_id} rung for two callers"
            ringing_in_offers[agent_id] = offer.offer_id
    for agent in engine._agents.values():
        if agent.status is AgentStatus.RINGING:
            assert agent.agent_id in ringing_in_offers
            assert engine._offers[ringing_in_offers[agent.agent_id]].call_id == agent.ringing_for
        else:
            assert agent.agent_id not in ringing_in_offers
            assert agent.ringing_for is None
    in_order = set()
    for state in engine._queues.values():
        places = [e.place for e in state.order]
        assert places == sorted(places)
        for position, entry in enumerate(state.order, start=1):
            assert engine._entries[entry.call_id] is entry
            assert entry.queue_id == state.config.queue_id
            assert engine.position(entry.call_id) == position
            in_order.add(entry.call_id)
    for entry in engine._entries.values():
        if entry.dialing_agent is None:
            assert entry.call_id in in_order
        else:
            assert entry.kind is EntryKind.CALLBACK and entry.offer_id is None
    # Work-conserving: no free agent next to a ready caller they could take.
    for agent_id, queue_ids in engine._agent_queues.items():
        if engine._agents[agent_id].status is not AgentStatus.AVAILABLE:
            continue
        for queue_id in queue_ids:
            state = engine._queues[queue_id]
            for entry in state.order:
                if entry.offer_id is None and entry.not_before is None:
                    candidates = engine._candidates(state, entry, 0.0)
                    assert agent_id not in {c.agent_id for c in candidates}, (
                        f"{agent_id} idle while {entry.call_id} waits in {queue_id}"
                    )


def as_json(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(data))
    return result


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_event_streams_keep_the_invariants(seed: int) -> None:
    engine = build_engine()
    driver = Driver(seed)
    kinds: set[str] = set()
    for _ in range(600):
        kinds.update(type(a).__name__ for a in driver.step(engine))
        check_invariants(engine)
    # The stream is rich enough to exercise the whole engine.
    assert {
        "OfferCall",
        "ConnectCaller",
        "PlayAnnouncement",
        "CallbackRegistered",
        "DialCustomer",
        "CancelOffer",
    } <= kinds


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_restored_engine_continues_exactly_like_the_original(seed: int) -> None:
    original = build_engine()
    driver = Driver(seed)
    for _ in range(400):
        driver.step(original)
    data = as_json(original.snapshot())
    assert any(entries for entries in (q["order"] for q in data["queues"]))
    restored = QueueEngine.restore(data)
    assert as_json(restored.snapshot()) == data
    assert restored.next_timer() == original.next_timer()

    twin = copy.deepcopy(driver)
    decisions = 0
    for _ in range(400):
        from_original = driver.step(original)
        from_restored = twin.step(restored)
        assert from_restored == from_original
        decisions += sum(isinstance(a, OfferCall) for a in from_original)
        check_invariants(restored)
    assert decisions > 20
    assert as_json(restored.snapshot()) == as_json(original.snapshot())


def test_snapshot_keeps_order_kinds_agent_states_and_history() -> None:
    engine = QueueEngine()
    engine.configure_queue(
        QueueConfig("q", members=(QueueMember("a"), QueueMember("b")), wrap_up_time=30.0),
        now=0.0,
    )
    engine.agent_login("a", 0.0)
    engine.agent_login("b", 0.0)
    engine.agent_pause("b", "lunch", 0.0)
    engine.join("q", "first", "+1", 1.0)
    engine.offer_accepted("first", "a", 2.0)
    engine.call_ended("a", 62.0)  # a in wrap-up until 92; one 90 s handle time on record
    engine.agent_pause("a", "meeting", 63.0)  # a should pause when wrap-up ends
    for n, caller in enumerate(["+2", "+3", "+4"]):
        engine.join("q", f"w{n}", caller, 70.0 + n)
    engine.request_callback("w1", 75.0)
    restored = QueueEngine.restore(as_json(engine.snapshot()))
    assert restored.waiting("q") == ["w0", "w1", "w2"]
    assert [restored.entry_kind(c) for c in ("w0", "w1", "w2")] == [
        EntryKind.LIVE,
        EntryKind.CALLBACK,
        EntryKind.LIVE,
    ]
    assert restored.agent_status("a") is AgentStatus.WRAP_UP
    assert (restored.agent_status("b"), restored.agent_pause_reason("b")) == (
        AgentStatus.PAUSED,
        "lunch",
    )
    assert restored.average_handle_time("q", 100.0) == pytest.approx(90.0)
    restored.handle_timer(92.0)
    assert restored.agent_pause_reason("a") == "meeting"


def test_a_snapshot_from_elsewhere_is_checked() -> None:
    data = as_json(QueueEngine().snapshot())
    with pytest.raises(BadSnapshot, match="version"):
        QueueEngine.restore({**data, "version": 99})
    engine = QueueEngine()
    engine.configure_queue(QueueConfig("q", members=(QueueMember("a"),)), now=0.0)
    engine.agent_login("a", 0.0)
    engine.agent_pause("a", "x", 0.0)
    engine.configure_queue(
        QueueConfig("q", members=(QueueMember("a"),), reject_when_no_agents=False), now=0.0
    )
    engine.join("q", "c1", "+1", 1.0)
    engine.join("q", "c2", "+1", 2.0)
    broken = as_json(engine.snapshot())
    broken["queues"][0]["order"].reverse()
    with pytest.raises(BadSnapshot, match="not in order"):
        QueueEngine.restore(broken)
