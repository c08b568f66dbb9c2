"""Overflow (max length, max wait, no agents, predicted wait) and live figures."""

from __future__ import annotations

from typing import TypeVar

import pytest
from callmesh_queue.core import (
    Action,
    CancelOffer,
    CancelReason,
    OfferCall,
    OverflowCall,
    OverflowKind,
    OverflowReason,
    OverflowTarget,
    QueueConfig,
    QueueEngine,
    QueueMember,
)

T = TypeVar("T")
VOICEMAIL = OverflowTarget(OverflowKind.VOICEMAIL, "vm-sales")


def of_type(actions: list[Action], kind: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, kind)]


def engine_with_busy_agent(**overrides: object) -> QueueEngine:
    settings: dict[str, object] = {
        "members": (QueueMember("ann"),),
        "overflow": VOICEMAIL,
        "default_handle_time": 120.0,
        "announce_on_join": False,
    }
    settings.update(overrides)
    engine = QueueEngine()
    engine.configure_queue(QueueConfig("sales", **settings), now=0.0)  # type: ignore[arg-type]
    engine.agent_login("ann", 0.0)
    engine.join("sales", "c0", "+1", 0.0)
    engine.offer_accepted("c0", "ann", 0.0)
    engine.drain_actions()
    return engine


@pytest.mark.parametrize(
    ("overrides", "joins_accepted", "reason"),
    [
        ({"max_length": 2}, 2, OverflowReason.QUEUE_FULL),
        # 120 s per place with one agent: place 2 (240 s) is over a 200 s threshold.
        ({"predicted_wait_threshold": 200.0}, 1, OverflowReason.PREDICTED_WAIT),
        ({"predicted_wait_threshold": 360.0}, 3, OverflowReason.PREDICTED_WAIT),
    ],
)
def test_join_is_refused_with_the_reason_and_the_overflow_target(
    overrides: dict[str, object], joins_accepted: int, reason: OverflowReason
) -> None:
    engine = engine_with_busy_agent(**overrides)
    results = [engine.join("sales", f"c{i}", "+49", 1.0 + i) for i in range(1, 6)]
    assert [r.accepted for r in results] == [True] * joins_accepted + [False] * (5 - joins_accepted)
    refused = results[joins_accepted]
    assert (refused.reason, refused.overflow, refused.position) == (reason, VOICEMAIL, None)
    assert engine.waiting("sales") == [f"c{i}" for i in range(1, joins_accepted + 1)]
    assert engine.figures("sales", 10.0).overflowed == 5 - joins_accepted


@pytest.mark.parametrize(
    ("agent_state", "reject_when_no_agents", "accepted"),
    [
        ("logged_out", True, False),
        ("paused", True, False),
        ("logged_out", False, True),
        ("available", True, True),
    ],
)
def test_no_agent_to_serve_the_queue(
    agent_state: str, reject_when_no_agents: bool, accepted: bool
) -> None:
    engine = QueueEngine()
    engine.configure_queue(
        QueueConfig(
            "sales",
            members=(QueueMember("ann"),),
            reject_when_no_agents=reject_when_no_agents,
            overflow=VOICEMAIL,
        ),
        now=0.0,
    )
    if agent_state != "logged_out":
        engine.agent_login("ann", 0.0)
    if agent_state == "paused":
        engine.agent_pause("ann", "lunch", 0.0)
    result = engine.join("sales", "c1", "+1", 1.0)
    assert result.accepted is accepted
    if not accepted:
        assert (result.reason, result.overflow) == (OverflowReason.NO_AGENTS, VOICEMAIL)


def test_waiting_callers_overflow_when_the_last_agent_leaves() -> None:
    engine = engine_with_busy_agent(leave_when_no_agents=True)
    engine.join("sales", "c1", "+1", 1.0)
    engine.join("sales", "c2", "+2", 2.0)
    engine.request_callback("c2", 3.0)
    engine.drain_actions()
    engine.agent_logout("ann", 10.0)
    overflowed = of_type(engine.drain_actions(), OverflowCall)
    assert [(o.call_id, o.reason, o.target) for o in overflowed] == [
        ("c1", OverflowReason.NO_AGENTS, VOICEMAIL)
    ]
    # The callback request keeps its place for when someone logs in again.
    assert engine.waiting("sales") == ["c2"]


def test_max_wait_sends_the_caller_to_overflow_and_stops_any_ringing() -> None:
    engine = engine_with_busy_agent(max_wait=100.0, ring_timeout=30.0)
    engine.join("sales", "c1", "+1", 10.0)
    engine.join("sales", "c2", "+2", 20.0)
    engine.call_ended("ann", 95.0)  # c1 rings ann from t=95 ...
    assert [o.call_id for o in of_type(engine.drain_actions(), OfferCall)] == ["c1"]
    engine.handle_timer(110.0)  # ... and reaches its 100 s limit at t=110
    actions = engine.drain_actions()
    assert [(c.call_id, c.reason) for c in of_type(actions, CancelOffer)] == [
        ("c1", CancelReason.OVERFLOW)
    ]
    assert [(o.call_id, o.reason) for o in of_type(actions, OverflowCall)] == [
        ("c1", OverflowReason.MAX_WAIT)
    ]
    assert [o.call_id for o in of_type(actions, OfferCall)] == ["c2"]  # ann moves on
    engine.offer_accepted("c2", "ann", 111.0)
    engine.handle_timer(500.0)
    assert of_type(engine.drain_actions(), OverflowCall) == []


def test_live_figures_and_the_service_level_formula() -> None:
    engine = QueueEngine()
    engine.configure_queue(
        QueueConfig(
            "sales",
            members=(QueueMember("ann"), QueueMember("bob")),
            service_level_threshold=20.0,
            announce_on_join=False,
            strategy="one_by_one",
        ),
        now=0.0,
    )
    engine.agent_login("ann", 0.0)
    engine.agent_login("bob", 0.0)
    engine.agent_pause("bob", "admin", 0.0)
    # Answered within 20 s.
    engine.join("sales", "fast", "+1", 0.0)
    engine.offer_accepted("fast", "ann", 5.0)
    for call_id, joined in (("slow", 10.0), ("short-abandon", 11.0), ("long-abandon", 12.0)):
        engine.join("sales", call_id, "+2", joined)
    engine.leave("short-abandon", 20.0)  # 9 s: not held against the queue
    figures = engine.figures("sales", 40.0)
    assert (figures.waiting, figures.longest_wait) == (2, 30.0)
    assert (figures.available_agents, figures.serving_agents) == (0, 1)
    engine.leave("long-abandon", 50.0)  # 38 s: counts against the queue
    engine.call_ended("ann", 60.0)
    engine.offer_accepted("slow", "ann", 61.0)  # answered after 51 s
    figures = engine.figures("sales", 70.0)
    assert (figures.answered, figures.answered_within_threshold) == (2, 1)
    assert (figures.abandoned, figures.abandoned_after_threshold) == (2, 1)
    # SL = answered within threshold / (answered + abandoned after threshold) = 1 / 3
    assert figures.service_level == pytest.approx(1 / 3)
    assert (figures.waiting, figures.longest_wait) == (0, 0.0)
    assert figures.average_handle_time == pytest.approx(55.0)
    engine.reset_counters("sales")
    assert engine.figures("sales", 70.0).service_level is None


def test_bad_configuration_is_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="ring_timeout"):
        QueueConfig("q", ring_timeout=0.0)
    with pytest.raises(ValueError, match="listed twice"):
        QueueConfig("q", members=(QueueMember("a"), QueueMember("a")))
    with pytest.raises(ValueError, match="max_wait"):
        QueueConfig("q", max_wait=-1.0)
    with pytest.raises(KeyError, match="no_such_strategy"):
        QueueEngine().configure_queue(QueueConfig("q", strategy="no_such_strategy"), now=0.0)
