"""Export an engine's complete state as plain data and rebuild an engine from it.

This is what a replica taking over a queue loads from PostgreSQL: queue definitions, every
entry in order with its join time, kind, place and deadlines, agent states, offers in
flight, the handle-time history and the counters. Timers are not stored: they are re-armed
from the deadlines on the records, and because timers are ordered by content rather than
insertion (see `timers.py`) the restored engine makes exactly the decisions the original
would have. The format is JSON-compatible (dicts, lists, str, int, float, bool, None).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from callmesh_queue.core.errors import BadSnapshot
from callmesh_queue.core.handle_time import HandleTimeHistory
from callmesh_queue.core.model import (
    ActiveCall,
    Agent,
    AgentStatus,
    EntryKind,
    NoAnswerPolicy,
    Offer,
    OverflowKind,
    OverflowTarget,
    QueueConfig,
    QueueMember,
    RingMode,
    WaitingEntry,
)
from callmesh_queue.core.stats import QueueCounters

if TYPE_CHECKING:
    from callmesh_queue.core.engine import QueueEngine

FORMAT_VERSION = 1

_SCALAR_CONFIG_FIELDS = (
    "queue_id",
    "strategy",
    "caller_order",
    "weight",
    "music",
    "ring_timeout",
    "cascade_step",
    "round_robin_memory",
    "retry_delay",
    "missed_penalty",
    "missed_penalty_seconds",
    "position_announce_interval",
    "wait_announce_interval",
    "announce_on_join",
    "announce_on_improvement",
    "announce_min_gap",
    "max_wait",
    "max_length",
    "reject_when_no_agents",
    "leave_when_no_agents",
    "wrap_up_time",
    "service_level_threshold",
    "predicted_wait_threshold",
    "default_handle_time",
    "handle_time_window",
    "callbacks_enabled",
    "callback_max_wait",
    "callback_max_attempts",
    "callback_retry_delay",
)


def config_to_data(config: QueueConfig) -> dict[str, Any]:
    data: dict[str, Any] = {name: getattr(config, name) for name in _SCALAR_CONFIG_FIELDS}
    data["members"] = [
        {
            "agent_id": m.agent_id,
            "penalty": m.penalty,
            "skills": dict(m.skills),
            "score": m.score,
        }
        for m in config.members
    ]
    data["no_answer_policy"] = config.no_answer_policy.value
    data["overflow"] = (
        None
        if config.overflow is None
        else {"kind": config.overflow.kind.value, "destination": config.overflow.destination}
    )
    data["priority_callers"] = dict(config.priority_callers)
    return data


def config_from_data(data: Mapping[str, Any]) -> QueueConfig:
    kwargs: dict[str, Any] = {name: data[name] for name in _SCALAR_CONFIG_FIELDS if name in data}
    kwargs["members"] = tuple(
        QueueMember(
            agent_id=m["agent_id"],
            penalty=int(m.get("penalty", 0)),
            skills={str(k): int(v) for k, v in m.get("skills", {}).items()},
            score=float(m.get("score", 0.0)),
        )
        for m in data.get("members", [])
    )
    kwargs["no_answer_policy"] = NoAnswerPolicy(data.get("no_answer_policy", "penalize"))
    overflow = data.get("overflow")
    kwargs["overflow"] = (
        None
        if overflow is None
        else OverflowTarget(OverflowKind(overflow["kind"]), overflow.get("destination", ""))
    )
    kwargs["priority_callers"] = {
        str(k): int(v) for k, v in data.get("priority_callers", {}).items()
    }
    return QueueConfig(**kwargs)


def _agent_to_data(agent: Agent) -> dict[str, Any]:
    call = agent.call
    return {
        "agent_id": agent.agent_id,
        "status": agent.status.value,
        "pause_reason": agent.pause_reason,
        "pending_pause_reason": agent.pending_pause_reason,
        "wrap_up_until": agent.wrap_up_until,
        "idle_since": agent.idle_since,
        "missed_penalty": agent.missed_penalty,
        "missed_penalty_until": agent.missed_penalty_until,
        "ringing_for": agent.ringing_for,
        "call": None
        if call is None
        else {
            "queue_id": call.queue_id,
            "call_id": call.call_id,
            "kind": call.kind.value,
            "answered_at": call.answered_at,
            "customer_connected": call.customer_connected,
        },
    }


def _agent_from_data(data: Mapping[str, Any]) -> Agent:
    call = data.get("call")
    return Agent(
        agent_id=data["agent_id"],
        status=AgentStatus(data["status"]),
        pause_reason=data.get("pause_reason"),
        pending_pause_reason=data.get("pending_pause_reason"),
        wrap_up_until=data.get("wrap_up_until"),
        idle_since=float(data.get("idle_since", 0.0)),
        missed_penalty=int(data.get("missed_penalty", 0)),
        missed_penalty_until=float(data.get("missed_penalty_until", 0.0)),
        ringing_for=data.get("ringing_for"),
        call=None
        if call is None
        else ActiveCall(
            queue_id=call["queue_id"],
            call_id=call["call_id"],
            kind=EntryKind(call["kind"]),
            answered_at=float(call["answered_at"]),
            customer_connected=bool(call["customer_connected"]),
        ),
    )


_ENTRY_FIELDS = (
    "call_id",
    "queue_id",
    "caller_number",
    "joined_at",
    "seq",
    "priority",
    "callback_number",
    "callback_requested_at",
    "callback_attempts",
    "give_up_at",
    "not_before",
    "offer_id",
    "dialing_agent",
    "max_wait_at",
    "next_position_at",
    "next_wait_at",
    "improvement_at",
    "announce_at",
    "last_announced_at",
    "last_position",
)


def _entry_to_data(entry: WaitingEntry) -> dict[str, Any]:
    data: dict[str, Any] = {name: getattr(entry, name) for name in _ENTRY_FIELDS}
    data["kind"] = entry.kind.value
    data["required_skills"] = dict(entry.required_skills)
    return data


def _entry_from_data(data: Mapping[str, Any]) -> WaitingEntry:
    kwargs: dict[str, Any] = {name: data.get(name) for name in _ENTRY_FIELDS}
    kwargs["kind"] = EntryKind(data["kind"])
    kwargs["required_skills"] = {str(k): int(v) for k, v in data.get("required_skills", {}).items()}
    kwargs["callback_attempts"] = int(data.get("callback_attempts") or 0)
    return WaitingEntry(**kwargs)


def _offer_to_data(offer: Offer) -> dict[str, Any]:
    return {
        "offer_id": offer.offer_id,
        "call_id": offer.call_id,
        "queue_id": offer.queue_id,
        "mode": offer.mode.value,
        "step": offer.step,
        "pending": list(offer.pending),
        # A list of pairs, not an object: ring order matters and must survive any store.
        "ringing": [[agent_id, deadline] for agent_id, deadline in offer.ringing.items()],
        "next_step_at": offer.next_step_at,
    }


def _offer_from_data(data: Mapping[str, Any]) -> Offer:
    return Offer(
        offer_id=int(data["offer_id"]),
        call_id=data["call_id"],
        queue_id=data["queue_id"],
        mode=RingMode(data["mode"]),
        step=float(data["step"]),
        pending=list(data["pending"]),
        ringing={str(a): float(d) for a, d in data["ringing"]},
        next_step_at=data.get("next_step_at"),
    )


def engine_to_data(engine: QueueEngine) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "next_seq": engine._next_seq,
        "next_offer_id": engine._next_offer_id,
        "clock": engine._clock if engine._clock != float("-inf") else None,
        "queues": [
            {
                "config": config_to_data(state.config),
                "order": [entry.call_id for entry in state.order],
                "last_offered_agent": state.last_offered_agent,
                "history": state.history.snapshot(),
                "counters": state.counters.to_data(),
            }
            for state in engine._queues.values()
        ],
        "agents": [_agent_to_data(agent) for agent in engine._agents.values()],
        "entries": [_entry_to_data(entry) for entry in engine._entries.values()],
        "offers": [_offer_to_data(offer) for offer in engine._offers.values()],
    }


def engine_from_data(engine: QueueEngine, data: Mapping[str, Any]) -> None:
    """Load `data` into a freshly constructed, empty engine."""
    if data.get("version") != FORMAT_VERSION:
        raise BadSnapshot(f"unsupported snapshot version {data.get('version')!r}")
    try:
        _load(engine, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadSnapshot(f"snapshot does not describe a consistent engine: {exc!r}") from exc


def _load(engine: QueueEngine, data: Mapping[str, Any]) -> None:
    # Agents first, so their order in the engine matches the original's exactly.
    for agent_data in data["agents"]:
        agent = _agent_from_data(agent_data)
        engine._agents[agent.agent_id] = agent
    for entry_data in data["entries"]:
        entry = _entry_from_data(entry_data)
        engine._entries[entry.call_id] = entry
    for queue_data in data["queues"]:
        config = config_from_data(queue_data["config"])
        engine._install_queue(
            config,
            engine._strategies.get(config.strategy),
            engine._orderings.get(config.caller_order),
        )
        state = engine._queues[config.queue_id]
        state.order = [engine._entries[call_id] for call_id in queue_data["order"]]
        if [e.place for e in state.order] != sorted(e.place for e in state.order):
            raise BadSnapshot(f"queue {config.queue_id!r}: entries are not in order")
        state.last_offered_agent = queue_data.get("last_offered_agent")
        state.history = HandleTimeHistory.restore(config.handle_time_window, queue_data["history"])
        state.counters = QueueCounters.from_data(queue_data["counters"])
    for offer_data in data["offers"]:
        offer = _offer_from_data(offer_data)
        engine._offers[offer.offer_id] = offer
    engine._next_seq = int(data["next_seq"])
    engine._next_offer_id = int(data["next_offer_id"])
    clock = data.get("clock")
    engine._clock = float("-inf") if clock is None else float(clock)
    for agent_id in engine._agents:
        engine._agent_queues.setdefault(agent_id, [])
    engine._rebuild_timers()
