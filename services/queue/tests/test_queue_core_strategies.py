"""Who is offered the call, per strategy, with paused, wrap-up, on-call and logged-out
agents around; no-answer policies; agents shared between queues."""

from __future__ import annotations

import pytest
from callmesh_queue.core import (
    Action,
    AgentStatus,
    CancelOffer,
    CancelReason,
    NoAnswerPolicy,
    OfferCall,
    QueueConfig,
    QueueEngine,
    QueueMember,
)

NOT_FREE = {"a", "b", "f", "g"}


def offers(actions: list[Action]) -> list[tuple[str, ...]]:
    return [a.agent_ids for a in actions if isinstance(a, OfferCall)]


def team_engine(strategy: str) -> QueueEngine:
    """Queue 'team' with seven members in this order, at t=50:

    a paused · b in wrap-up · d free since 30 · c free since 10 · e free since 20 with
    penalty 1 · f on a call · g logged out. Skill 'es': c 5, d 2, e 9, a 9, b 9.
    Scores: c 0.1, d 0.8, e 0.9, a 1.0, b 1.0.
    """
    engine = QueueEngine()
    # A side queue puts b in a long wrap-up and f on a call.
    engine.configure_queue(
        QueueConfig(
            "side",
            members=(QueueMember("b"), QueueMember("f")),
            strategy="one_by_one",
            wrap_up_time=1_000.0,
            announce_on_join=False,
        ),
        now=0.0,
    )
    for agent_id in ("a", "b", "f"):
        engine.agent_login(agent_id, 0.0)
    engine.agent_pause("a", "training", 0.0)
    engine.join("side", "s1", "+1", 1.0)
    engine.offer_accepted("s1", "b", 1.0)
    engine.join("side", "s2", "+2", 2.0)
    engine.offer_accepted("s2", "f", 2.0)
    engine.call_ended("b", 3.0)
    engine.agent_login("c", 10.0)
    engine.agent_login("e", 20.0)
    engine.agent_login("d", 30.0)
    engine.configure_queue(
        QueueConfig(
            "team",
            members=(
                QueueMember("a", skills={"es": 9}, score=1.0),
                QueueMember("b", skills={"es": 9}, score=1.0),
                QueueMember("d", skills={"es": 2}, score=0.8),
                QueueMember("c", skills={"es": 5}, score=0.1),
                QueueMember("e", penalty=1, skills={"es": 9}, score=0.9),
                QueueMember("f"),
                QueueMember("g"),
            ),
            strategy=strategy,
            ring_timeout=10.0,
            cascade_step=4.0,
            no_answer_policy=NoAnswerPolicy.NONE,
            announce_on_join=False,
        ),
        now=40.0,
    )
    assert engine.agent_status("a") is AgentStatus.PAUSED
    assert engine.agent_status("b") is AgentStatus.WRAP_UP
    assert engine.agent_status("f") is AgentStatus.ON_CALL
    engine.drain_actions()
    return engine


def ring_sequence(engine: QueueEngine, until: float) -> list[tuple[float, tuple[str, ...]]]:
    """Let nobody answer and record (time, agents) of every new ring until `until`."""
    sequence = [(50.0, agents) for agents in offers(engine.drain_actions())]
    while (deadline := engine.next_timer()) is not None and deadline <= until:
        engine.handle_timer(deadline)
        sequence += [(deadline, agents) for agents in offers(engine.drain_actions())]
    return sequence


@pytest.mark.parametrize(
    ("strategy", "skills", "expected"),
    [
        # Everyone free in the lowest penalty tier at once; again when nobody answered.
        ("ring_all", None, [(50.0, ("d", "c")), (60.0, ("d", "c"))]),
        # Longest idle first (c since 10, then d since 30), penalty-1 e last, then again.
        ("longest_idle", None, [(50.0, ("c",)), (60.0, ("d",)), (70.0, ("e",)), (80.0, ("c",))]),
        # Configured order d, c, then e (higher penalty); memory resumes after e.
        ("one_by_one", None, [(50.0, ("d",)), (60.0, ("c",)), (70.0, ("e",)), (80.0, ("d",))]),
        # Each 4 s another agent joins the ringing ones; each rings its own 10 s.
        ("cascading", None, [(50.0, ("d",)), (54.0, ("c",)), (58.0, ("e",)), (68.0, ("d",))]),
        # Only 'es' >= 3 qualifies (d has 2); best level first among the same penalty.
        ("skills", {"es": 3}, [(50.0, ("c",)), (60.0, ("e",)), (70.0, ("c",))]),
        ("skills", {"es": 9}, [(50.0, ("e",)), (60.0, ("e",))]),
        # No requirement: any member, longest idle first.
        ("skills", None, [(50.0, ("c",)), (60.0, ("d",)), (70.0, ("e",)), (80.0, ("c",))]),
        # Best score first within a penalty tier: d 0.8 before c 0.1; e (penalty 1) last.
        ("efficiency", None, [(50.0, ("d",)), (60.0, ("c",)), (70.0, ("e",)), (80.0, ("d",))]),
    ],
)
def test_who_is_offered_the_call(
    strategy: str,
    skills: dict[str, int] | None,
    expected: list[tuple[float, tuple[str, ...]]],
) -> None:
    engine = team_engine(strategy)
    engine.join("team", "caller", "+49301", 50.0, required_skills=skills)
    sequence = ring_sequence(engine, until=expected[-1][0])
    assert sequence == expected
    rung = {agent for _, agents in sequence for agent in agents}
    assert not rung & NOT_FREE


def test_cascading_keeps_earlier_agents_ringing_and_the_first_to_answer_wins() -> None:
    engine = team_engine("cascading")
    engine.join("team", "caller", "+49301", 50.0)
    engine.handle_timer(55.0)
    assert offers(engine.drain_actions()) == [("d",), ("c",)]
    assert engine.agent_status("d") is AgentStatus.RINGING
    assert engine.offer_accepted("caller", "d", 56.0)
    cancels = [a for a in engine.drain_actions() if isinstance(a, CancelOffer)]
    assert [(c.agent_ids, c.reason) for c in cancels] == [(("c",), CancelReason.ANSWERED_ELSEWHERE)]
    assert engine.agent_status("c") is AgentStatus.AVAILABLE
    assert engine.next_timer() is not None  # b's wrap-up; no cascade step is left
    engine.handle_timer(70.0)
    assert offers(engine.drain_actions()) == []


def test_one_by_one_round_robin_memory_goes_round_the_team() -> None:
    engine = QueueEngine()
    members = tuple(QueueMember(x) for x in ("p", "q", "r"))
    engine.configure_queue(
        QueueConfig("rr", members=members, strategy="one_by_one", announce_on_join=False), now=0.0
    )
    for agent_id in ("p", "q", "r"):
        engine.agent_login(agent_id, 0.0)
    first_rung = []
    for n in range(5):
        engine.join("rr", f"c{n}", "+1", 1.0 + n)
        (offer,) = offers(engine.drain_actions())
        first_rung.append(offer[0])
        engine.offer_accepted(f"c{n}", offer[0], 1.0 + n)
        engine.call_ended(offer[0], 1.5 + n)
    assert first_rung == ["p", "q", "r", "p", "q"]


def test_wrap_up_agent_is_offered_only_once_wrap_up_is_over() -> None:
    engine = team_engine("ring_all")
    engine.agent_pause("d", "break", 45.0)
    engine.agent_pause("c", "break", 45.0)
    engine.join("team", "caller", "+49301", 50.0)
    # Only e (penalty 1) is free now.
    assert offers(engine.drain_actions()) == [("e",)]
    engine.offer_declined("caller", "e", 51.0)
    assert offers(engine.drain_actions()) == [("e",)]  # policy none: e again, nobody else
    engine.agent_pause("e", "break", 52.0)
    assert offers(engine.drain_actions()) == []
    engine.handle_timer(1_002.0)  # b's 1000 s wrap-up (from t=3) ends at t=1003
    assert offers(engine.drain_actions()) == []
    engine.handle_timer(1_003.0)
    assert offers(engine.drain_actions()) == [("b",)]


def no_answer_engine(policy: NoAnswerPolicy) -> QueueEngine:
    engine = QueueEngine()
    engine.configure_queue(
        QueueConfig(
            "q",
            members=(QueueMember("x"), QueueMember("y"), QueueMember("z")),
            strategy="longest_idle",
            ring_timeout=15.0,
            no_answer_policy=policy,
            missed_penalty=1,
            missed_penalty_seconds=60.0,
            announce_on_join=False,
        ),
        now=0.0,
    )
    engine.agent_login("x", 0.0)
    engine.agent_login("y", 5.0)
    engine.agent_login("z", 7.0)
    engine.join("q", "c1", "+1", 10.0)
    assert offers(engine.drain_actions()) == [("x",)]
    engine.handle_timer(25.0)  # x does not answer
    actions = engine.drain_actions()
    assert offers(actions) == [("y",)]
    assert [(a.agent_ids, a.reason) for a in actions if isinstance(a, CancelOffer)] == [
        (("x",), CancelReason.NO_ANSWER)
    ]
    assert engine.offer_accepted("c1", "y", 26.0)
    engine.drain_actions()
    return engine


def test_ring_no_answer_with_penalty_puts_the_agent_behind_others_for_a_while() -> None:
    engine = no_answer_engine(NoAnswerPolicy.PENALIZE)
    assert engine.agent_status("x") is AgentStatus.AVAILABLE
    engine.join("q", "c2", "+2", 27.0)
    # x has been idle longest but carries the missed-call penalty: z first.
    assert offers(engine.drain_actions()) == [("z",)]
    engine.offer_accepted("c2", "z", 28.0)
    engine.join("q", "c3", "+3", 29.0)
    assert offers(engine.drain_actions()) == [("x",)]  # still the only free agent
    engine.offer_accepted("c3", "x", 30.0)  # answering clears the penalty
    for agent_id in ("x", "y", "z"):
        engine.call_ended(agent_id, 100.0)
    engine.join("q", "c4", "+4", 101.0)
    assert offers(engine.drain_actions()) == [("x",)]


def test_ring_no_answer_with_pause_pauses_the_agent_and_tries_the_next() -> None:
    engine = no_answer_engine(NoAnswerPolicy.PAUSE)
    assert engine.agent_status("x") is AgentStatus.PAUSED
    assert engine.agent_pause_reason("x") == "missed call"
    engine.join("q", "c2", "+2", 27.0)
    assert offers(engine.drain_actions()) == [("z",)]
    engine.offer_accepted("c2", "z", 28.0)
    engine.join("q", "c3", "+3", 29.0)
    assert offers(engine.drain_actions()) == []
    engine.agent_unpause("x", 30.0)
    assert offers(engine.drain_actions()) == [("x",)]


def test_pausing_or_logging_out_a_ringing_agent_moves_the_offer_on_without_penalty() -> None:
    engine = QueueEngine()
    engine.configure_queue(
        QueueConfig(
            "q",
            members=(QueueMember("x"), QueueMember("y")),
            strategy="one_by_one",
            announce_on_join=False,
        ),
        now=0.0,
    )
    engine.agent_login("x", 0.0)
    engine.agent_login("y", 0.0)
    engine.join("q", "c1", "+1", 1.0)
    assert offers(engine.drain_actions()) == [("x",)]
    engine.agent_pause("x", "coffee", 2.0)
    actions = engine.drain_actions()
    assert [(a.agent_ids, a.reason) for a in actions if isinstance(a, CancelOffer)] == [
        (("x",), CancelReason.AGENT_UNAVAILABLE)
    ]
    assert offers(actions) == [("y",)]
    engine.agent_logout("y", 3.0)
    assert offers(engine.drain_actions()) == []
    assert engine.waiting("q") == ["c1"]
    assert not engine.offer_accepted("c1", "y", 3.5)  # too late: the offer was withdrawn
    stale = [a for a in engine.drain_actions() if isinstance(a, CancelOffer)]
    assert [(a.agent_ids, a.reason) for a in stale] == [(("y",), CancelReason.STALE)]


def shared_agent_engine(weight_q1: int = 0, weight_q2: int = 0) -> QueueEngine:
    engine = QueueEngine()
    for queue_id, weight in (("q1", weight_q1), ("q2", weight_q2)):
        engine.configure_queue(
            QueueConfig(
                queue_id,
                members=(QueueMember("shared"),),
                weight=weight,
                announce_on_join=False,
                reject_when_no_agents=False,
            ),
            now=0.0,
        )
    engine.agent_login("shared", 0.0)
    return engine


def test_an_agent_in_two_queues_gets_one_offer_at_a_time() -> None:
    engine = shared_agent_engine()
    engine.join("q1", "c1", "+1", 1.0)
    engine.join("q2", "c2", "+2", 1.0)
    assert [
        (a.queue_id, a.call_id, a.agent_ids)
        for a in engine.drain_actions()
        if isinstance(a, OfferCall)
    ] == [("q1", "c1", ("shared",))]
    engine.handle_timer(10.0)
    assert offers(engine.drain_actions()) == []


@pytest.mark.parametrize(
    ("join_q1", "join_q2", "weight_q1", "weight_q2", "winner"),
    [
        (2.0, 1.0, 0, 0, "c2"),  # longest-waiting caller across the agent's queues
        (1.0, 2.0, 0, 9, "c1"),  # ... even against a heavier queue
        (1.0, 1.0, 0, 9, "c2"),  # same wait: queue weight breaks the tie
        (1.0, 1.0, 9, 0, "c1"),
    ],
)
def test_a_freed_shared_agent_takes_the_longest_waiting_caller_across_queues(
    join_q1: float, join_q2: float, weight_q1: int, weight_q2: int, winner: str
) -> None:
    engine = shared_agent_engine(weight_q1, weight_q2)
    engine.agent_pause("shared", "meeting", 0.5)
    joins = sorted([(join_q1, "q1", "c1"), (join_q2, "q2", "c2")])
    for joined_at, queue_id, call_id in joins:
        engine.join(queue_id, call_id, "+1", joined_at)
    engine.agent_unpause("shared", 5.0)
    offered = [a.call_id for a in engine.drain_actions() if isinstance(a, OfferCall)]
    assert offered == [winner]


def test_logging_out_and_in_during_a_call_does_not_make_the_agent_free() -> None:
    engine = shared_agent_engine()
    engine.join("q1", "c1", "+1", 1.0)
    engine.offer_accepted("c1", "shared", 2.0)
    engine.drain_actions()
    engine.agent_logout("shared", 3.0)
    engine.agent_login("shared", 4.0)
    assert engine.agent_status("shared") is AgentStatus.ON_CALL
    engine.join("q2", "c2", "+2", 5.0)
    assert offers(engine.drain_actions()) == []
    engine.call_ended("shared", 6.0)
    assert offers(engine.drain_actions()) == [("shared",)]
