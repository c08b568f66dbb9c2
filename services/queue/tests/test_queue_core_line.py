"""First come first served, announcements, priority callers and wait estimates."""

from __future__ import annotations

import dataclasses

import pytest
from callmesh_queue.core import (
    Action,
    ConnectCaller,
    EntryKind,
    OfferCall,
    PlayAnnouncement,
    QueueConfig,
    QueueEngine,
    QueueMember,
    estimate_wait,
)


def announcements(actions: list[Action]) -> list[tuple[str, int | None, int | None]]:
    return [
        (a.call_id, a.position, a.estimated_wait)
        for a in actions
        if isinstance(a, PlayAnnouncement)
    ]


def connected(actions: list[Action]) -> list[str]:
    return [a.call_id for a in actions if isinstance(a, ConnectCaller)]


def busy_single_agent_queue(**overrides: object) -> QueueEngine:
    """Queue 'sales' with agent alice, who is on a call (with caller c0) from t=1."""
    settings: dict[str, object] = {
        "members": (QueueMember("alice"),),
        "position_announce_interval": 30.0,
        "wait_announce_interval": 60.0,
        "announce_min_gap": 10.0,
        "default_handle_time": 120.0,
    }
    settings.update(overrides)
    engine = QueueEngine()
    engine.configure_queue(QueueConfig("sales", **settings), now=0.0)  # type: ignore[arg-type]
    engine.agent_login("alice", 0.0)
    engine.join("sales", "c0", "+4930000", 0.0)
    assert engine.offer_accepted("c0", "alice", 1.0)
    engine.drain_actions()
    return engine


def serve_next(engine: QueueEngine, now: float) -> str:
    """Alice finishes her call at `now`, is offered the next caller and answers at once."""
    engine.call_ended("alice", now)
    offers = [a for a in engine.drain_actions() if isinstance(a, OfferCall)]
    assert len(offers) == 1 and offers[0].agent_ids == ("alice",)
    engine.offer_accepted(offers[0].call_id, "alice", now)
    return offers[0].call_id


def test_three_callers_are_served_in_arrival_order_with_position_announcements() -> None:
    engine = busy_single_agent_queue()
    results = [engine.join("sales", f"c{i}", f"+4930{i}", float(1 + i)) for i in (1, 2, 3)]
    assert [r.position for r in results] == [1, 2, 3]
    # One agent serving, nobody's average yet: the default 120 s handle time per place.
    assert [r.estimated_wait for r in results] == [120, 240, 360]
    assert announcements(engine.drain_actions()) == [
        ("c1", 1, 120),
        ("c2", 2, 240),
        ("c3", 3, 360),
    ]
    # Position every 30 s; the wait only every 60 s.
    engine.handle_timer(35.0)
    assert announcements(engine.drain_actions()) == [
        ("c1", 1, None),
        ("c2", 2, None),
        ("c3", 3, None),
    ]
    # Alice's first call lasted 39 s: that is now the average handle time.
    assert serve_next(engine, 40.0) == "c1"
    actions = engine.drain_actions()
    assert connected(actions) == ["c1"]
    # c2 and c3 moved up; the new positions are announced once the 10 s gap since their
    # last announcement (t=33, t=34) has passed, with the shrunken estimate.
    engine.handle_timer(44.0)
    assert announcements(engine.drain_actions()) == [("c2", 1, 39), ("c3", 2, 78)]
    assert serve_next(engine, 50.0) == "c2"
    assert serve_next(engine, 60.0) == "c3"
    assert engine.waiting("sales") == []


def test_position_announcements_come_in_order_and_only_ever_go_down() -> None:
    engine = busy_single_agent_queue()
    for i in (1, 2, 3):
        engine.join("sales", f"c{i}", f"+4930{i}", float(i))
    heard: dict[str, list[int]] = {}
    now = 4.0
    for end in (70.0, 130.0, 190.0):
        while (deadline := engine.next_timer()) is not None and deadline < end:
            now = deadline
            engine.handle_timer(now)
        for call_id, position, _ in announcements(engine.drain_actions()):
            if position is not None:
                heard.setdefault(call_id, []).append(position)
        serve_next(engine, end)
    # Joined at t=1..3; every 30 s; a move-up is announced once 10 s after the last one.
    assert heard == {"c1": [1, 1, 1], "c2": [2, 2, 2, 1, 1], "c3": [3, 3, 3, 2, 2, 1, 1]}
    for positions in heard.values():
        assert positions == sorted(positions, reverse=True)


@pytest.mark.parametrize(
    ("caller_order", "expected_order"),
    [
        ("priority", ["vip1", "vip2", "c1", "c2"]),
        ("fifo", ["c1", "c2", "vip1", "vip2"]),
    ],
)
def test_priority_callers_jump_ahead_but_stay_fifo_within_their_class(
    caller_order: str, expected_order: list[str]
) -> None:
    engine = busy_single_agent_queue(
        caller_order=caller_order, priority_callers={"+4971111": 5, "+4972222": 5}
    )
    engine.join("sales", "c1", "+4930001", 2.0)
    engine.join("sales", "c2", "+4930002", 3.0)
    vip1 = engine.join("sales", "vip1", "+4971111", 4.0)
    vip2 = engine.join("sales", "vip2", "+4972222", 5.0)
    assert engine.waiting("sales") == expected_order
    if caller_order == "priority":
        assert (vip1.position, vip2.position) == (1, 2)
        assert engine.position("c1") == 3
    served = [serve_next(engine, 10.0 * k) for k in (1, 2, 3, 4)]
    assert served == expected_order


def test_explicit_priority_from_routing_overrides_the_white_list() -> None:
    engine = busy_single_agent_queue(priority_callers={"+4971111": 5})
    engine.join("sales", "c1", "+4930001", 2.0)
    engine.join("sales", "listed-but-demoted", "+4971111", 3.0, priority=0)
    engine.join("sales", "urgent", "+4930003", 4.0, priority=9)
    assert engine.waiting("sales") == ["urgent", "c1", "listed-but-demoted"]


@pytest.mark.parametrize(
    ("position", "serving", "available", "aht", "expected"),
    [
        (1, 1, 0, 120.0, 120.0),
        (3, 1, 0, 120.0, 360.0),
        (3, 3, 0, 120.0, 120.0),
        (4, 2, 0, 100.0, 200.0),
        (2, 2, 2, 100.0, 0.0),  # idle agents take the first places at once
        (3, 2, 1, 100.0, 100.0),
        (1, 0, 0, 100.0, None),  # nobody serving: no honest estimate
    ],
)
def test_estimate_wait_formula(
    position: int, serving: int, available: int, aht: float, expected: float | None
) -> None:
    assert estimate_wait(position, serving, available, aht) == expected


def test_estimated_wait_follows_the_rolling_handle_time_and_shrinks_as_the_queue_moves() -> None:
    engine = busy_single_agent_queue(position_announce_interval=None, wait_announce_interval=20.0)
    for i in (1, 2, 3):
        engine.join("sales", f"c{i}", f"+4930{i}", float(i))
    engine.drain_actions()
    # Alice's calls take 60 s each from here on.
    waits_of_c3: list[int] = []
    for k in (1, 2):
        end = 1.0 + 60.0 * k
        engine.handle_timer(end - 0.5)
        waits_of_c3 += [w for c, _, w in announcements(engine.drain_actions()) if c == "c3" and w]
        serve_next(engine, end)
    engine.handle_timer(200.0)
    waits_of_c3 += [w for c, _, w in announcements(engine.drain_actions()) if c == "c3" and w]
    assert waits_of_c3[0] == 360  # default handle time, third place
    assert waits_of_c3[-1] == 60  # first place now, average handle time 60 s
    assert waits_of_c3 == sorted(waits_of_c3, reverse=True)
    assert len(set(waits_of_c3)) >= 3
    assert engine.average_handle_time("sales", 200.0) == pytest.approx(60.0)
    # The history is a rolling day: a day later the estimate is back on the default.
    assert engine.average_handle_time("sales", 200.0 + 86_400.0) is None


def test_a_second_agent_halves_the_estimate() -> None:
    engine = busy_single_agent_queue()
    for i in (1, 2, 3, 4):
        engine.join("sales", f"c{i}", f"+4930{i}", float(i))
    assert engine.estimated_wait("sales", 4, 5.0) == 480
    config = engine.queue_config("sales")
    members = (QueueMember("alice"), QueueMember("bob"))
    engine.configure_queue(dataclasses.replace(config, members=members), now=6.0)
    engine.agent_login("bob", 6.0)
    engine.agent_pause("bob", "lunch", 6.0)  # paused agents do not serve
    assert engine.estimated_wait("sales", 4, 6.0) == 480
    engine.agent_unpause("bob", 7.0)  # bob is offered c1 right away and answers
    engine.offer_accepted("c1", "bob", 7.0)
    assert engine.position("c4") == 3
    assert engine.estimated_wait("sales", 3, 8.0) == 180


def test_no_announcement_while_the_caller_is_ringing_an_agent() -> None:
    engine = QueueEngine()
    engine.configure_queue(
        QueueConfig("q", members=(QueueMember("a"),), ring_timeout=40.0), now=0.0
    )
    engine.agent_login("a", 0.0)
    result = engine.join("q", "c1", "+1", 0.0)
    assert result.position == 1 and result.estimated_wait == 0
    actions = engine.drain_actions()
    assert [a.agent_ids for a in actions if isinstance(a, OfferCall)] == [("a",)]
    assert announcements(actions) == []
    engine.handle_timer(39.0)
    assert announcements(engine.drain_actions()) == []
    assert engine.entry_kind("c1") is EntryKind.LIVE
