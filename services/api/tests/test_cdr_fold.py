"""The CDR fold without I/O: call event sequences as the platform emits them, and their CDRs.

`Script` writes the events of one call the way sip-edge and queue would publish them (per-leg
seq from 1, times as offsets from the call's start); the Kafka pipeline test reuses the same
scenarios.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from callmesh.common.v1 import common_pb2
from callmesh.events.v1 import calls_pb2
from callmesh.events.v1.calls_pb2 import CallEvent
from callmesh_api.cdr import (
    CallRecord,
    InvalidCallEvent,
    event_key,
    fold_event,
    fold_events,
    national_digits,
)
from google.protobuf.duration_pb2 import Duration

DAY = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
INBOUND = common_pb2.CALL_DIRECTION_INBOUND
OUTBOUND = common_pb2.CALL_DIRECTION_OUTBOUND
CALLER = calls_pb2.HANGUP_SIDE_CALLER
CALLEE = calls_pb2.HANGUP_SIDE_CALLEE
PLATFORM = calls_pb2.HANGUP_SIDE_PLATFORM
OUT = calls_pb2  # outcomes: OUT.CALL_OUTCOME_ANSWERED, ...


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(int(value * 1000))
    return duration


@dataclass
class Script:
    """The events of one call, in publication order."""

    tenant_id: str
    start: dt.datetime
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    events: list[CallEvent] = field(default_factory=list)
    _seq: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, leg: str, at: float, kind: str, **fields: Any) -> Script:
        self._seq[leg] += 1
        event = CallEvent(
            event_id=str(uuid.uuid4()),
            call_id=self.call_id,
            leg=leg,
            seq=self._seq[leg],
            tenant_id=self.tenant_id,
            producer="test",
        )
        event.occurred_at.FromDatetime(self.start + dt.timedelta(seconds=at))
        getattr(event, kind).CopyFrom(getattr(calls_pb2, _MESSAGE[kind])(**fields))
        self.events.append(event)
        return self

    def end(self, leg: str, at: float, outcome: int, side: int, **fields: Any) -> Script:
        return self.add(leg, at, "ended", outcome=outcome, hangup_side=side, **fields)


_MESSAGE = {
    "attempt": "CallAttempt",
    "ringing": "CallRinging",
    "answered": "CallAnswered",
    "transferred": "CallTransferred",
    "ended": "CallEnded",
    "queue_joined": "QueueJoined",
    "queue_left": "QueueLeft",
    "queue_abandoned": "QueueAbandoned",
    "queue_answered": "QueueAnswered",
    "queue_callback_requested": "QueueCallbackRequested",
    "survey_answered": "SurveyAnswered",
}


@dataclass(frozen=True)
class Users:
    anna: str  # extension 101
    boris: str  # extension 102
    vera: str  # extension 103


def new_users() -> Users:
    return Users(str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()))


DID = "+74951112233"


def inbound(tenant: str, start: dt.datetime, caller: str) -> Script:
    script = Script(tenant, start)
    return script.add(
        "a", 0, "attempt", direction=INBOUND, caller_number=caller, caller_name="Client",
        callee_number=DID, did=DID,
    )  # fmt: skip


def ring(script: Script, leg: str, at: float, user: str, extension: str) -> Script:
    return script.add(
        leg, at, "attempt", direction=INBOUND, callee_number=extension, callee_user_id=user,
        callee_extension=extension, parent_leg="a",
    )  # fmt: skip


def answered_inbound(tenant: str, users: Users, start: dt.datetime, caller: str) -> Script:
    """Rings Anna (101), who answers after 8 s and talks 60 s; the caller hangs up."""
    s = inbound(tenant, start, caller)
    s.add("a", 0.3, "ringing", post_dial_delay=seconds(0.3))
    ring(s, "b1", 0.5, users.anna, "101")
    s.add("b1", 1, "ringing")
    s.add("b1", 8, "answered", answered_by_user_id=users.anna, answered_by_extension="101",
          ring_duration=seconds(7.5), bridged_with_leg="a")  # fmt: skip
    s.add("a", 8, "answered", bridged_with_leg="b1")
    s.end("a", 68, OUT.CALL_OUTCOME_ANSWERED, CALLER, total_duration=seconds(68),
          ring_duration=seconds(8), talk_duration=seconds(60),
          quality=calls_pb2.MediaQuality(mos=4.2))  # fmt: skip
    s.end("b1", 68.1, OUT.CALL_OUTCOME_ANSWERED, CALLER, total_duration=seconds(67.6),
          ring_duration=seconds(7.5), talk_duration=seconds(60.1),
          quality=calls_pb2.MediaQuality(mos=3.9))  # fmt: skip
    return s


def missed_inbound(tenant: str, users: Users, start: dt.datetime, caller: str) -> Script:
    """Rings Anna and Boris for 30 s; nobody answers, the platform gives up."""
    s = inbound(tenant, start, caller)
    ring(s, "b1", 0.5, users.anna, "101")
    ring(s, "b2", 0.5, users.boris, "102")
    for leg in ("b1", "b2"):
        s.end(leg, 30, OUT.CALL_OUTCOME_NO_ANSWER, PLATFORM, total_duration=seconds(29.5),
              ring_duration=seconds(29.5))  # fmt: skip
    s.end("a", 30, OUT.CALL_OUTCOME_NO_ANSWER, PLATFORM, sip_status=480,
          cause=common_pb2.HANGUP_CAUSE_NO_ANSWER, total_duration=seconds(30),
          ring_duration=seconds(30))  # fmt: skip
    return s


def busy_inbound(tenant: str, users: Users, start: dt.datetime, caller: str) -> Script:
    s = inbound(tenant, start, caller)
    ring(s, "b1", 0.5, users.boris, "102")
    s.end("b1", 1.5, OUT.CALL_OUTCOME_BUSY, CALLEE, sip_status=486, total_duration=seconds(1))
    s.end("a", 1.6, OUT.CALL_OUTCOME_BUSY, PLATFORM, sip_status=486,
          cause=common_pb2.HANGUP_CAUSE_USER_BUSY, total_duration=seconds(1.6),
          ring_duration=seconds(1.6))  # fmt: skip
    return s


def cancelled_inbound(tenant: str, users: Users, start: dt.datetime, caller: str) -> Script:
    s = inbound(tenant, start, caller)
    ring(s, "b1", 0.5, users.anna, "101")
    s.end("a", 12, OUT.CALL_OUTCOME_CANCELLED, CALLER,
          cause=common_pb2.HANGUP_CAUSE_ORIGINATOR_CANCEL, total_duration=seconds(12),
          ring_duration=seconds(12))  # fmt: skip
    s.end("b1", 12.1, OUT.CALL_OUTCOME_CANCELLED, PLATFORM, total_duration=seconds(11.6))
    return s


def outbound(tenant: str, users: Users, start: dt.datetime, callee: str, talk: float) -> Script:
    """Boris (102) dials `callee` (nationally, as people do); 2 s post-dial delay."""
    s = Script(tenant, start)
    s.add("a", 0, "attempt", direction=OUTBOUND, caller_number="102", caller_user_id=users.boris,
          callee_number=callee)  # fmt: skip
    s.add("b1", 0.2, "attempt", direction=OUTBOUND, caller_number="+74951112233",
          callee_number=callee, parent_leg="a", trunk_id=str(uuid.UUID(int=7)))  # fmt: skip
    s.add("b1", 2.2, "ringing", post_dial_delay=seconds(2))
    s.add("a", 2.2, "ringing", post_dial_delay=seconds(2.2))
    s.add("b1", 9, "answered", ring_duration=seconds(8.8), bridged_with_leg="a")
    s.add("a", 9, "answered", bridged_with_leg="b1")
    s.end("a", 9 + talk, OUT.CALL_OUTCOME_ANSWERED, CALLER, total_duration=seconds(9 + talk),
          ring_duration=seconds(9), talk_duration=seconds(talk))  # fmt: skip
    s.end("b1", 9 + talk, OUT.CALL_OUTCOME_ANSWERED, CALLER, total_duration=seconds(8.8 + talk),
          ring_duration=seconds(8.8), talk_duration=seconds(talk))  # fmt: skip
    return s


def queued_answered(tenant: str, users: Users, start: dt.datetime, caller: str) -> Script:
    """Answered by the platform, 20 s in queue `support`, then Vera (103) talks 90 s."""
    s = inbound(tenant, start, caller)
    s.add("a", 1, "answered")
    s.add("queue", 2, "queue_joined", queue_id="support", waiting_id="w1", position=1)
    ring(s, "b1", 20, users.vera, "103")
    s.add("queue", 22, "queue_answered", queue_id="support", waiting_id="w1",
          agent_user_id=users.vera, waited=seconds(20), agent_leg="b1")  # fmt: skip
    s.add("b1", 22, "answered", answered_by_user_id=users.vera, answered_by_extension="103",
          bridged_with_leg="a")  # fmt: skip
    s.end("a", 112, OUT.CALL_OUTCOME_ANSWERED, CALLEE, total_duration=seconds(112),
          ring_duration=seconds(1), talk_duration=seconds(111))  # fmt: skip
    s.end("b1", 112, OUT.CALL_OUTCOME_ANSWERED, CALLEE, total_duration=seconds(92),
          ring_duration=seconds(2), talk_duration=seconds(90))  # fmt: skip
    return s


def queued_abandoned(tenant: str, users: Users, start: dt.datetime, caller: str) -> Script:
    """Answered by the platform, waits 45 s in `support`, hangs up."""
    s = inbound(tenant, start, caller)
    s.add("a", 1, "answered")
    s.add("queue", 2, "queue_joined", queue_id="support", waiting_id="w2", position=3)
    s.add("queue", 47, "queue_abandoned", queue_id="support", waiting_id="w2",
          waited=seconds(45), position=2)  # fmt: skip
    s.end("a", 47, OUT.CALL_OUTCOME_ANSWERED, CALLER, total_duration=seconds(47),
          ring_duration=seconds(1), talk_duration=seconds(46))  # fmt: skip
    return s


@dataclass(frozen=True)
class Expected:
    outcome: str
    direction: str
    talk_ms: int
    total_ms: int
    answered_by: str | None = None
    rang: tuple[str, ...] = ()
    queue_wait_ms: int | None = None


def scenarios(tenant: str, users: Users, start: dt.datetime) -> list[tuple[Script, Expected]]:
    """One of each kind of call, a minute apart, with what its CDR must say."""

    def at(minutes: int) -> dt.datetime:
        return start + dt.timedelta(minutes=minutes)

    return [
        (
            answered_inbound(tenant, users, at(0), "+78121234567"),
            Expected("answered", "inbound", 60_100, 68_000, users.anna, ("101",)),
        ),
        (
            missed_inbound(tenant, users, at(1), "+78122222222"),
            Expected("no_answer", "inbound", 0, 30_000, None, ("101", "102")),
        ),
        (
            busy_inbound(tenant, users, at(2), "+74953333333"),
            Expected("busy", "inbound", 0, 1_600, None, ("102",)),
        ),
        (
            cancelled_inbound(tenant, users, at(3), "+79114444444"),
            Expected("cancelled", "inbound", 0, 12_000, None, ("101",)),
        ),
        (
            outbound(tenant, users, at(4), "84955555555", talk=120),
            Expected("answered", "outbound", 120_000, 129_000),
        ),
        (
            queued_answered(tenant, users, at(5), "+78126666666"),
            Expected("answered", "inbound", 90_000, 112_000, users.vera, ("103",), 20_000),
        ),
        (
            queued_abandoned(tenant, users, at(6), "+78127777777"),
            Expected("abandoned", "inbound", 0, 47_000, None, (), 45_000),
        ),
    ]


def check(cdr: CallRecord, expected: Expected) -> None:
    assert cdr.outcome == expected.outcome, cdr
    assert cdr.direction == expected.direction
    assert cdr.talk_ms == expected.talk_ms, (expected, cdr.talk_ms)
    assert cdr.total_ms == expected.total_ms
    assert (str(cdr.answered_by_user_id) if cdr.answered_by_user_id else None) == (
        expected.answered_by
    )
    assert cdr.rang_extensions == expected.rang
    assert cdr.queue_wait_ms == expected.queue_wait_ms
    assert cdr.closed


# -- tests ------------------------------------------------------------------------------------
def test_each_scenario_folds_into_its_cdr() -> None:
    tenant, users = str(uuid.uuid4()), new_users()
    for script, expected in scenarios(tenant, users, DAY):
        (cdr,) = fold_events(script.events, region="RU")
        check(cdr, expected)
        assert cdr.started_at == script.start


def test_answered_inbound_details() -> None:
    users = new_users()
    script = answered_inbound(str(uuid.uuid4()), users, DAY, "+78121234567")
    (cdr,) = fold_events(script.events, region="RU")
    assert cdr.caller_number == "+78121234567" and cdr.caller_national == "8121234567"
    assert cdr.remote_number == "+78121234567" and cdr.did == DID
    assert cdr.answered_at == DAY + dt.timedelta(seconds=8)
    assert cdr.ring_ms == 8_000 and cdr.post_dial_delay_ms == 300
    assert cdr.answered_by_extension == "101"
    assert cdr.party_user_ids == (uuid.UUID(users.anna),)
    assert cdr.mos == pytest.approx(3.9)  # the worse leg
    assert cdr.hangup_side == "caller" and cdr.ended_at == DAY + dt.timedelta(seconds=68)


def test_outbound_normalises_the_dialled_number_with_the_tenant_region() -> None:
    users = new_users()
    (cdr,) = fold_events(outbound(str(uuid.uuid4()), users, DAY, "84955555555", 30).events, "RU")
    assert cdr.remote_number == "+74955555555"
    assert cdr.caller_user_id == uuid.UUID(users.boris) and cdr.caller_extension == "102"
    assert cdr.party_user_ids == (uuid.UUID(users.boris),)
    assert cdr.trunk_id == uuid.UUID(int=7)
    assert cdr.post_dial_delay_ms == 2_200 and cdr.ring_ms == 9_000


def test_missed_call_details() -> None:
    users = new_users()
    (cdr,) = fold_events(missed_inbound(str(uuid.uuid4()), users, DAY, "+78122222222").events)
    assert cdr.sip_status == 480 and cdr.cause == "no_answer"
    assert cdr.answered_at is None and cdr.ring_ms == 30_000
    assert set(cdr.rang_user_ids) == {uuid.UUID(users.anna), uuid.UUID(users.boris)}


def test_cross_leg_order_does_not_change_the_cdr() -> None:
    """Legs are independent producers; any interleaving that keeps each leg's order folds the
    same (here: random merges of the per-leg streams)."""
    tenant, users = str(uuid.uuid4()), new_users()
    rng = random.Random(7)
    for script, expected in scenarios(tenant, users, DAY):
        reference = fold_events(script.events, "RU")[0]
        per_leg: dict[str, list[CallEvent]] = defaultdict(list)
        for event in script.events:
            per_leg[event.leg].append(event)
        for _ in range(20):
            queues = {leg: list(events) for leg, events in per_leg.items()}
            merged = []
            while queues:
                leg = rng.choice(sorted(queues))
                merged.append(queues[leg].pop(0))
                if not queues[leg]:
                    del queues[leg]
            (cdr,) = fold_events(merged, "RU")
            assert cdr == reference, (expected, [e.leg + e.WhichOneof("kind") for e in merged])


def test_in_progress_until_the_a_leg_ends() -> None:
    users = new_users()
    events = answered_inbound(str(uuid.uuid4()), users, DAY, "+78121234567").events
    (cdr,) = fold_events(events[:5])  # b1 answered, a-leg still up
    assert cdr.outcome == "in_progress" and not cdr.closed and cdr.total_ms is None


def test_events_of_a_leg_whose_attempt_was_lost() -> None:
    users = new_users()
    events = answered_inbound(str(uuid.uuid4()), users, DAY, "+78121234567").events
    without_b_attempt = [e for e in events if not (e.leg == "b1" and e.seq == 1)]
    (cdr,) = fold_events(without_b_attempt)
    # What the remaining events say is still there: Anna answered, the call was answered.
    assert cdr.outcome == "answered" and cdr.answered_by_user_id == uuid.UUID(users.anna)
    assert cdr.rang_extensions == ("101",)  # from the answer
    call, leg = fold_event(None, None, events[-1])  # only the b-leg's end ever arrived
    assert leg.started_at == leg.ended_at and leg.talk_ms == 60_100
    assert call.outcome == "in_progress" and call.started_at == leg.ended_at


def test_duplicates_are_folded_once() -> None:
    users = new_users()
    events = answered_inbound(str(uuid.uuid4()), users, DAY, "+78121234567").events
    once = fold_events(events)
    assert fold_events(events + events[::-1]) == once


def test_unusable_events_are_rejected() -> None:
    good = answered_inbound(str(uuid.uuid4()), new_users(), DAY, "+7812").events[0]
    for change in (
        {"call_id": "not-a-uuid"},
        {"tenant_id": ""},
        {"leg": ""},
        {"seq": 0},
    ):
        bad = CallEvent()
        bad.CopyFrom(good)
        for name, value in change.items():
            setattr(bad, name, value)
        with pytest.raises(InvalidCallEvent):
            event_key(bad)
    no_kind = CallEvent()
    no_kind.CopyFrom(good)
    no_kind.ClearField("attempt")
    with pytest.raises(InvalidCallEvent, match="no fact"):
        event_key(no_kind)


def test_region_prefix_digits() -> None:
    assert national_digits("+78121234567", None) == "8121234567"
    assert national_digits("88121234567", "RU") == "8121234567"
    assert national_digits("101", "RU") == ""
