"""Callback requests that keep the caller's place: agent first, then customer; retries,
the give-up deadline and the final apology with voicemail."""

from __future__ import annotations

from typing import TypeVar

import pytest
from callmesh_queue.core import (
    Action,
    ApologizeAndOfferVoicemail,
    CallbackRegistered,
    CancelOffer,
    CancelReason,
    ConnectCaller,
    DialCustomer,
    EntryKind,
    GiveUpReason,
    InvalidTransition,
    OfferCall,
    OverflowCall,
    PlayAnnouncement,
    QueueConfig,
    QueueEngine,
    QueueMember,
)

T = TypeVar("T")


def of_type(actions: list[Action], kind: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, kind)]


def engine_with_three_waiting(**overrides: object) -> QueueEngine:
    """Agent 'ann' on a call from t=1; callers c1, c2, c3 waiting (joined t=2, 3, 4)."""
    settings: dict[str, object] = {
        "members": (QueueMember("ann"),),
        "callback_max_wait": 1_800.0,
        "callback_max_attempts": 3,
        "callback_retry_delay": 60.0,
        "ring_timeout": 20.0,
        "position_announce_interval": 30.0,
        "wait_announce_interval": None,
    }
    settings.update(overrides)
    engine = QueueEngine()
    engine.configure_queue(QueueConfig("support", **settings), now=0.0)  # type: ignore[arg-type]
    engine.agent_login("ann", 0.0)
    engine.join("support", "c0", "+4930000", 0.0)
    engine.offer_accepted("c0", "ann", 1.0)
    for i in (1, 2, 3):
        engine.join("support", f"c{i}", f"+4930{i}", float(1 + i))
    engine.drain_actions()
    return engine


def test_callback_request_keeps_the_place_and_rings_the_agent_then_the_customer() -> None:
    engine = engine_with_three_waiting()
    assert engine.request_callback("c2", 10.0, number="+4917700002")
    registered = of_type(engine.drain_actions(), CallbackRegistered)
    assert [(r.call_id, r.number, r.position) for r in registered] == [("c2", "+4917700002", 2)]
    assert engine.entry_kind("c2") is EntryKind.CALLBACK
    assert engine.waiting("support") == ["c1", "c2", "c3"]
    assert (engine.position("c2"), engine.position("c3")) == (2, 3)
    # The caller hung up: no more announcements for them, the others carry on.
    engine.handle_timer(40.0)
    assert [a.call_id for a in of_type(engine.drain_actions(), PlayAnnouncement)] == ["c1", "c3"]

    engine.call_ended("ann", 50.0)
    assert [o.call_id for o in of_type(engine.drain_actions(), OfferCall)] == ["c1"]
    engine.offer_accepted("c1", "ann", 51.0)
    engine.call_ended("ann", 60.0)
    (offer,) = of_type(engine.drain_actions(), OfferCall)
    # The agent is called first, shown the number that will be called back.
    assert (offer.call_id, offer.kind, offer.caller_number) == (
        "c2",
        EntryKind.CALLBACK,
        "+4917700002",
    )
    engine.offer_accepted("c2", "ann", 62.0)
    actions = engine.drain_actions()
    assert of_type(actions, ConnectCaller) == []
    assert [(d.agent_id, d.number, d.attempt) for d in of_type(actions, DialCustomer)] == [
        ("ann", "+4917700002", 1)
    ]
    # While the customer is dialled, c3 is first in line.
    assert engine.position("c3") == 1
    assert engine.callback_customer_answered("c2", 70.0)
    engine.call_ended("ann", 200.0)
    assert [o.call_id for o in of_type(engine.drain_actions(), OfferCall)] == ["c3"]
    figures = engine.figures("support", 200.0)
    assert (figures.callbacks_completed, figures.callbacks_failed) == (1, 0)


def test_unanswered_callback_is_retried_from_its_place_and_ends_in_an_apology() -> None:
    engine = engine_with_three_waiting()
    engine.request_callback("c2", 10.0)
    engine.leave("c1", 11.0)
    engine.agent_pause("ann", "after this call", 12.0)  # c3 is kept waiting meanwhile
    engine.drain_actions()
    dial_times: list[float] = []
    now = 20.0
    engine.call_ended("ann", now)
    engine.agent_unpause("ann", now)
    for attempt in (1, 2, 3):
        (offer,) = of_type(engine.drain_actions(), OfferCall)
        assert offer.call_id == "c2" and offer.kind is EntryKind.CALLBACK
        engine.offer_accepted("c2", "ann", now)
        (dial,) = of_type(engine.drain_actions(), DialCustomer)
        assert (dial.attempt, dial.number) == (attempt, "+49302")
        dial_times.append(now)
        assert engine.waiting("support") == ["c3"]
        engine.agent_pause("ann", "between attempts", now)
        now += 30.0
        assert engine.callback_customer_failed("c2", now)
        if attempt < 3:
            # Back at its place ahead of c3, held back for the 60 s retry delay.
            assert engine.waiting("support") == ["c2", "c3"]
            assert engine.position("c3") == 2
            now += 60.0
            engine.handle_timer(now)
            engine.agent_unpause("ann", now)
    apologies = of_type(engine.drain_actions(), ApologizeAndOfferVoicemail)
    assert [(a.call_id, a.number, a.reason) for a in apologies] == [
        ("c2", "+49302", GiveUpReason.CUSTOMER_UNREACHABLE)
    ]
    assert dial_times == [20.0, 110.0, 200.0]
    assert engine.waiting("support") == ["c3"]
    assert engine.figures("support", now).callbacks_failed == 1


def test_a_callback_retry_waits_out_its_delay_while_others_are_served() -> None:
    engine = engine_with_three_waiting()
    engine.request_callback("c1", 10.0)
    engine.call_ended("ann", 20.0)
    engine.offer_accepted("c1", "ann", 20.0)
    engine.drain_actions()
    engine.callback_customer_failed("c1", 30.0)
    # ann is free: c2 is offered while c1 is held back until t=90.
    assert [o.call_id for o in of_type(engine.drain_actions(), OfferCall)] == ["c2"]
    engine.offer_accepted("c2", "ann", 31.0)
    engine.call_ended("ann", 95.0)
    assert [o.call_id for o in of_type(engine.drain_actions(), OfferCall)] == ["c1"]


def test_callback_nobody_takes_before_the_deadline_is_given_up_with_an_apology() -> None:
    engine = engine_with_three_waiting(callback_max_wait=300.0)
    engine.request_callback("c3", 10.0)
    engine.drain_actions()
    engine.handle_timer(309.0)
    assert of_type(engine.drain_actions(), ApologizeAndOfferVoicemail) == []
    engine.handle_timer(310.0)
    apologies = of_type(engine.drain_actions(), ApologizeAndOfferVoicemail)
    assert [(a.call_id, a.reason) for a in apologies] == [("c3", GiveUpReason.NO_AGENT_IN_TIME)]
    assert engine.waiting("support") == ["c1", "c2"]


def test_callback_offer_that_rings_at_the_deadline_is_withdrawn() -> None:
    engine = engine_with_three_waiting(callback_max_wait=100.0)
    engine.request_callback("c1", 10.0)
    engine.call_ended("ann", 105.0)
    (offer,) = of_type(engine.drain_actions(), OfferCall)
    assert offer.call_id == "c1"
    engine.handle_timer(110.0)
    actions = engine.drain_actions()
    assert [(c.call_id, c.reason) for c in of_type(actions, CancelOffer)] == [
        ("c1", CancelReason.GAVE_UP)
    ]
    assert [a.call_id for a in of_type(actions, ApologizeAndOfferVoicemail)] == ["c1"]
    # ann is free again and takes the next caller.
    assert [o.call_id for o in of_type(actions, OfferCall)] == ["c2"]


def test_callback_requested_while_ringing_is_reoffered_as_a_callback() -> None:
    engine = QueueEngine()
    engine.configure_queue(
        QueueConfig("q", members=(QueueMember("a"),), announce_on_join=False), now=0.0
    )
    engine.agent_login("a", 0.0)
    engine.join("q", "c1", "+1", 1.0)
    assert [o.kind for o in of_type(engine.drain_actions(), OfferCall)] == [EntryKind.LIVE]
    engine.request_callback("c1", 2.0)
    actions = engine.drain_actions()
    assert [(c.reason, c.agent_ids) for c in of_type(actions, CancelOffer)] == [
        (CancelReason.CALLBACK_REQUESTED, ("a",))
    ]
    assert [o.kind for o in of_type(actions, OfferCall)] == [EntryKind.CALLBACK]


def test_callbacks_can_be_switched_off_and_cancelled() -> None:
    engine = engine_with_three_waiting(callbacks_enabled=False)
    assert not engine.request_callback("c1", 5.0)
    assert engine.entry_kind("c1") is EntryKind.LIVE
    with pytest.raises(InvalidTransition):
        engine.join("support", "form", "+5", 5.0, callback_number="+5")
    assert engine.waiting("support") == ["c1", "c2", "c3"]
    engine = engine_with_three_waiting()
    assert engine.request_callback("c1", 5.0)
    assert not engine.request_callback("c1", 6.0)  # already a callback
    assert engine.leave("c1", 7.0)  # the customer cancels it
    assert engine.waiting("support") == ["c2", "c3"]
    figures = engine.figures("support", 8.0)
    assert (figures.abandoned, figures.callbacks_waiting) == (0, 0)


def test_a_callback_request_can_join_the_line_without_a_live_call() -> None:
    engine = engine_with_three_waiting()
    result = engine.join("support", "web-form", "+49304", 5.0, callback_number="+4917799")
    assert (result.accepted, result.position) == (True, 4)
    actions = engine.drain_actions()
    assert [(r.call_id, r.number, r.position) for r in of_type(actions, CallbackRegistered)] == [
        ("web-form", "+4917799", 4)
    ]
    assert of_type(actions, PlayAnnouncement) == []
    assert engine.figures("support", 6.0).callbacks_waiting == 1
    for call_id in ("c1", "c2", "c3"):
        engine.leave(call_id, 7.0)
    engine.call_ended("ann", 8.0)
    (offer,) = of_type(engine.drain_actions(), OfferCall)
    assert (offer.call_id, offer.kind, offer.caller_number) == (
        "web-form",
        EntryKind.CALLBACK,
        "+4917799",
    )
    engine.offer_accepted("web-form", "ann", 9.0)
    # Being dialled still counts as a callback holding its place in the figures.
    figures = engine.figures("support", 9.0)
    assert (figures.callbacks_waiting, figures.waiting) == (1, 0)


def test_an_event_stamped_in_the_past_is_taken_as_happening_now() -> None:
    engine = engine_with_three_waiting(max_wait=100.0)
    engine.handle_timer(50.0)
    engine.join("support", "late", "+1", 20.0)  # delayed message: joins at t=50
    engine.handle_timer(120.0)
    overflowed = [o.call_id for o in of_type(engine.drain_actions(), OverflowCall)]
    assert overflowed == ["c1", "c2", "c3"]
    engine.handle_timer(150.0)
    overflowed = [o.call_id for o in of_type(engine.drain_actions(), OverflowCall)]
    assert overflowed == ["late"]
