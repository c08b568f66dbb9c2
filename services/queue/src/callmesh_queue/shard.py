"""One tenant's queues as one replica owns them: the engine plus the adapter's record of each
wait, driven by journal operations.

Everything an owner does to a tenant's queues is an *operation*: a small JSON-compatible dict
with the `now` it used (`{"op": "join", "now": ..., ...}`). `Shard.apply(op)` feeds it to the
engine, keeps the per-wait records the gRPC side needs (offer ids, phase, language) and
returns what must be told (stream instructions, CallEvents). Nothing here does I/O or reads a
clock, so applying the same operations to the same snapshot gives the same state: that is
how a new owner rebuilds a shard from PostgreSQL (snapshot + journal replay, see
`store.py`), and why the runtime only has to journal operations, never their results.

Waits are keyed by `waiting_id`, which is also the engine's key for the entry: a call may
wait in a queue more than once over its life, but each wait is its own id.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from callmesh.common.v1 import common_pb2
from callmesh.events.v1 import calls_pb2
from callmesh.queue.v1 import queue_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from callmesh_queue.core import (
    Action,
    AgentStateChanged,
    ApologizeAndOfferVoicemail,
    CallbackRegistered,
    CancelOffer,
    ConnectCaller,
    DialCustomer,
    EntryKind,
    JoinResult,
    OfferCall,
    OverflowCall,
    OverflowKind,
    OverflowReason,
    OverflowTarget,
    PlayAnnouncement,
    QueueCoreError,
    QueueEngine,
)
from callmesh_queue.core.snapshot import config_from_data

STATE_VERSION = 1
LEG = "queue"


class Phase(enum.StrEnum):
    WAITING = "waiting"  # in line with a live caller
    CALLBACK = "callback"  # a callback request holding the caller's place; no stream
    CONNECTED = "connected"  # bridged to an agent; the stream waits for ConnectionEnded
    SURVEY = "survey"  # the agent hung up; waiting for the caller's rating


@dataclass(slots=True)
class WaitRecord:
    waiting_id: str
    call_id: str
    queue_id: str
    caller_number: str
    caller_name: str
    language: str
    priority: int
    entered_at: float
    phase: Phase = Phase.WAITING
    # Open offers: offer id -> agent id, in the order they were made.
    offers: dict[str, str] = field(default_factory=dict)
    offers_made: int = 0
    agent_id: str | None = None
    offer_id: str | None = None  # the offer that was connected

    def to_data(self) -> dict[str, Any]:
        return {
            "waiting_id": self.waiting_id,
            "call_id": self.call_id,
            "queue_id": self.queue_id,
            "caller_number": self.caller_number,
            "caller_name": self.caller_name,
            "language": self.language,
            "priority": self.priority,
            "entered_at": self.entered_at,
            "phase": self.phase.value,
            "offers": [[k, v] for k, v in self.offers.items()],
            "offers_made": self.offers_made,
            "agent_id": self.agent_id,
            "offer_id": self.offer_id,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> WaitRecord:
        return cls(
            waiting_id=data["waiting_id"],
            call_id=data["call_id"],
            queue_id=data["queue_id"],
            caller_number=data["caller_number"],
            caller_name=data["caller_name"],
            language=data["language"],
            priority=int(data["priority"]),
            entered_at=float(data["entered_at"]),
            phase=Phase(data["phase"]),
            offers={str(k): str(v) for k, v in data["offers"]},
            offers_made=int(data["offers_made"]),
            agent_id=data.get("agent_id"),
            offer_id=data.get("offer_id"),
        )


@dataclass(slots=True)
class AgentRecord:
    since: float
    last_call_ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """Per-queue settings that only shape what the edge is told (never the engine's state)."""

    agent_extensions: dict[str, str] = field(default_factory=dict)
    callback_digit: str = "1"
    voicemail_digit: str = ""
    survey: bool = False
    survey_prompt: str = "queue-survey"
    callback_goodbye_prompt: str = "queue-callback-goodbye"
    caller_name_prefix: str = ""
    record: bool = False
    # IANA zone whose midnight starts a new day of "today" figures (answered, abandoned, SL).
    time_zone: str = "UTC"

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> QueueOptions:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(slots=True)
class Outcome:
    """What applying one operation produced."""

    # (waiting_id, instruction) in the order they must be sent.
    instructions: list[tuple[str, queue_pb2.QueueInstruction]] = field(default_factory=list)
    # Waits whose stream ends after its instructions (Overflow, Finish, CallbackAccepted).
    finished: list[str] = field(default_factory=list)
    # CallEvents without event_id/seq/producer (the runtime stamps them when it commits).
    events: list[calls_pb2.CallEvent] = field(default_factory=list)
    # Engine actions with nobody to carry them out yet (callback origination).
    unrouted: list[Action] = field(default_factory=list)
    join: JoinResult | None = None
    error: QueueCoreError | None = None

    def say(self, waiting_id: str, instruction: queue_pb2.QueueInstruction) -> None:
        self.instructions.append((waiting_id, instruction))


def duration(seconds: float) -> Duration:
    value = Duration()
    value.FromNanoseconds(round(max(seconds, 0.0) * 1e9))
    return value


def timestamp(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


_LEFT_REASONS = {
    OverflowReason.MAX_WAIT: calls_pb2.QUEUE_LEFT_REASON_MAX_WAIT,
    OverflowReason.QUEUE_FULL: calls_pb2.QUEUE_LEFT_REASON_MAX_LENGTH,
    OverflowReason.NO_AGENTS: calls_pb2.QUEUE_LEFT_REASON_NO_AGENTS,
    OverflowReason.PREDICTED_WAIT: calls_pb2.QUEUE_LEFT_REASON_PREDICTED_WAIT,
}
_OVERFLOW_REASONS = {
    OverflowReason.MAX_WAIT: queue_pb2.OVERFLOW_REASON_MAX_WAIT,
    OverflowReason.QUEUE_FULL: queue_pb2.OVERFLOW_REASON_MAX_LENGTH,
    OverflowReason.NO_AGENTS: queue_pb2.OVERFLOW_REASON_NO_AGENTS,
    OverflowReason.PREDICTED_WAIT: queue_pb2.OVERFLOW_REASON_PREDICTED_WAIT,
}


def destination(target: OverflowTarget | None) -> common_pb2.Destination:
    if target is None:
        return common_pb2.Destination()
    if target.kind is OverflowKind.QUEUE:
        return common_pb2.Destination(queue_id=target.destination)
    if target.kind is OverflowKind.NUMBER:
        return common_pb2.Destination(number=target.destination)
    if target.kind is OverflowKind.VOICEMAIL:
        return common_pb2.Destination(voicemail_box=target.destination)
    return common_pb2.Destination(message=common_pb2.MediaSource(prompt=target.destination))


def rejection_overflow(result: JoinResult) -> queue_pb2.QueueInstruction:
    """What a caller the queue would not take is told (full, nobody serving, too long)."""
    reason = queue_pb2.OVERFLOW_REASON_UNSPECIFIED
    if result.reason is not None:
        reason = _OVERFLOW_REASONS.get(result.reason, reason)
    overflow = queue_pb2.Overflow(reason=reason, target=destination(result.overflow))
    return queue_pb2.QueueInstruction(overflow=overflow)


class Shard:
    """The state of one tenant's queues; see the module docstring."""

    def __init__(self, tenant_id: str, engine: QueueEngine | None = None) -> None:
        self.tenant_id = tenant_id
        self.engine = engine if engine is not None else QueueEngine()
        self.waits: dict[str, WaitRecord] = {}
        self.agents: dict[str, AgentRecord] = {}
        # The local day each queue's counters belong to (ISO date).
        self.counter_days: dict[str, str] = {}
        # Set by the runtime from the definitions table; not part of the replayed state.
        self.options: dict[str, QueueOptions] = {}

    # ------------------------------------------------------------------ persistence

    def to_data(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "engine": self.engine.snapshot(),
            "waits": [record.to_data() for record in self.waits.values()],
            "agents": [
                [agent_id, record.since, record.last_call_ended_at]
                for agent_id, record in self.agents.items()
            ],
            "counter_days": dict(self.counter_days),
        }

    @classmethod
    def restore(cls, tenant_id: str, data: dict[str, Any]) -> Shard:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported shard state version {data.get('version')!r}")
        shard = cls(tenant_id, QueueEngine.restore(data["engine"]))
        for record_data in data["waits"]:
            record = WaitRecord.from_data(record_data)
            shard.waits[record.waiting_id] = record
        for agent_id, since, ended in data["agents"]:
            shard.agents[agent_id] = AgentRecord(float(since), ended)
        shard.counter_days = {str(k): str(v) for k, v in data.get("counter_days", {}).items()}
        return shard

    # ------------------------------------------------------------------ queries

    def queue_options(self, queue_id: str) -> QueueOptions:
        return self.options.get(queue_id) or QueueOptions()

    def live_waits(self) -> Iterator[WaitRecord]:
        """Waits a caller's stream belongs to (everything but callback requests)."""
        return (r for r in self.waits.values() if r.phase is not Phase.CALLBACK)

    def joined_instruction(self, record: WaitRecord, now: float) -> queue_pb2.QueueInstruction:
        """`Joined` for a wait as it stands now (first join and re-joins alike)."""
        position = self.engine.position(record.waiting_id) or 0
        joined = queue_pb2.Joined(
            waiting_id=record.waiting_id,
            position=position if record.phase is Phase.WAITING else 0,
            entered_at=timestamp(record.entered_at),
        )
        if record.phase is Phase.WAITING and position:
            wait = self.engine.estimated_wait(record.queue_id, position, now)
            if wait is not None:
                joined.estimated_wait.CopyFrom(duration(wait))
        return queue_pb2.QueueInstruction(joined=joined)

    def music_instruction(self, record: WaitRecord) -> queue_pb2.QueueInstruction:
        music = self.engine.queue_config(record.queue_id).music
        return queue_pb2.QueueInstruction(
            play_music=queue_pb2.PlayMusic(music=common_pb2.MediaSource(music_class=music))
        )

    # ------------------------------------------------------------------ operations

    def apply(self, op: dict[str, Any]) -> Outcome:
        """Apply one journal operation. Engine errors are returned, never raised: even a
        refused operation may have fired timers on the way, and the journal must hold it so
        a replay refuses it at the same point with the same side effects."""
        outcome = Outcome()
        now = float(op["now"])
        handler = getattr(self, f"_op_{op['op']}")
        try:
            handler(op, now, outcome)
        except QueueCoreError as exc:
            outcome.error = exc
        self._map_actions(self.engine.drain_actions(), now, outcome)
        self._forget_finished_callbacks()
        return outcome

    def _op_configure(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        self.engine.configure_queue(config_from_data(op["config"]), now)

    def _op_new_day(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        """A queue's local day changed: its "today" counters start again from zero. The
        first day a queue is seen only records the day (its counters are that day's)."""
        queue_id = op["queue_id"]
        if queue_id in self.counter_days:
            self.engine.reset_counters(queue_id)
        self.counter_days[queue_id] = op["day"]

    def _op_timer(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        self.engine.handle_timer(now)

    def _op_join(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        waiting_id = op["waiting_id"]
        priority = int(op.get("priority") or 0)
        skills = {str(s): 0 for s in op.get("skills", [])}
        result = self.engine.join(
            op["queue_id"],
            waiting_id,
            op["caller_number"],
            now,
            priority=priority or None,
            required_skills=skills,
        )
        outcome.join = result
        if not result.accepted:
            left = calls_pb2.QueueLeft(
                queue_id=op["queue_id"],
                reason=_LEFT_REASONS.get(
                    result.reason or OverflowReason.NO_AGENTS,
                    calls_pb2.QUEUE_LEFT_REASON_UNSPECIFIED,
                ),
                next=destination(result.overflow),
            )
            outcome.events.append(self._event(op["call_id"], now, queue_left=left))
            return
        record = WaitRecord(
            waiting_id=waiting_id,
            call_id=op["call_id"],
            queue_id=op["queue_id"],
            caller_number=op["caller_number"],
            caller_name=op.get("caller_name", ""),
            language=op.get("language", ""),
            priority=priority,
            entered_at=now,
        )
        self.waits[waiting_id] = record
        outcome.say(waiting_id, self.joined_instruction(record, now))
        outcome.say(waiting_id, self.music_instruction(record))
        joined = calls_pb2.QueueJoined(
            queue_id=record.queue_id,
            waiting_id=waiting_id,
            position=result.position or 0,
            priority=priority,
        )
        if result.estimated_wait is not None:
            joined.estimated_wait.CopyFrom(duration(result.estimated_wait))
        outcome.events.append(self._event(record.call_id, now, queue_joined=joined))

    def _op_hangup(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        """The caller hung up (or their stream stayed away too long: `orphaned`)."""
        record = self.waits.get(op["waiting_id"])
        if record is None or record.phase is Phase.CALLBACK:
            return  # a callback request outlives the caller's line by design
        if record.phase is Phase.WAITING:
            position = self.engine.position(record.waiting_id) or 0
            if self.engine.leave(record.waiting_id, now):
                abandoned = calls_pb2.QueueAbandoned(
                    queue_id=record.queue_id,
                    waiting_id=record.waiting_id,
                    waited=duration(now - record.entered_at),
                    position=position,
                )
                outcome.events.append(self._event(record.call_id, now, queue_abandoned=abandoned))
        elif record.phase is Phase.CONNECTED and record.agent_id is not None:
            self._end_connection(record, now)
        del self.waits[record.waiting_id]

    _op_orphaned = _op_hangup

    def _op_leave(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        """The caller leaves while still on the line: moved on, or their own choice."""
        record = self.waits.get(op["waiting_id"])
        if record is None or record.phase is not Phase.WAITING:
            return
        if not self.engine.leave(record.waiting_id, now):
            return
        del self.waits[record.waiting_id]
        choice = bool(op.get("caller_choice"))
        left = calls_pb2.QueueLeft(
            queue_id=record.queue_id,
            waiting_id=record.waiting_id,
            reason=calls_pb2.QUEUE_LEFT_REASON_CALLER_CHOICE
            if choice
            else calls_pb2.QUEUE_LEFT_REASON_MOVED,
            waited=duration(now - record.entered_at),
        )
        if choice:
            target = common_pb2.Destination(voicemail_box=op.get("voicemail_box", ""))
            left.next.CopyFrom(target)
            overflow = queue_pb2.Overflow(
                reason=queue_pb2.OVERFLOW_REASON_CALLER_CHOICE, target=target
            )
            outcome.say(record.waiting_id, queue_pb2.QueueInstruction(overflow=overflow))
        else:
            outcome.say(record.waiting_id, queue_pb2.QueueInstruction(finish=queue_pb2.Finish()))
        outcome.finished.append(record.waiting_id)
        outcome.events.append(self._event(record.call_id, now, queue_left=left))

    def _op_request_callback(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        record = self.waits.get(op["waiting_id"])
        if record is None or record.phase is not Phase.WAITING:
            return
        self.engine.request_callback(record.waiting_id, now, op.get("number") or None)

    def _op_offer_answered(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        record = self.waits.get(op["waiting_id"])
        offer_id = op["offer_id"]
        agent_id = record.offers.get(offer_id) if record is not None else None
        if record is None or agent_id is None:
            outcome.say(op["waiting_id"], _cancel(offer_id))
            return
        if not self.engine.offer_accepted(record.waiting_id, agent_id, now):
            # Withdrawn a moment ago (answered elsewhere, timed out): the engine emits a
            # stale CancelOffer for the agent, mapped below; make sure this exact offer goes.
            record.offers.pop(offer_id, None)
            outcome.say(record.waiting_id, _cancel(offer_id))

    def _op_offer_failed(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        record = self.waits.get(op["waiting_id"])
        agent_id = record.offers.get(op["offer_id"]) if record is not None else None
        if record is None or agent_id is None:
            return
        # A decline ends this offer without a CancelOffer from the engine: forget it here.
        del record.offers[op["offer_id"]]
        self.engine.offer_declined(record.waiting_id, agent_id, now)

    def _op_connection_ended(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        record = self.waits.get(op["waiting_id"])
        if record is None or record.phase is not Phase.CONNECTED:
            return
        self._end_connection(record, now)
        if self.queue_options(record.queue_id).survey and op.get("ended_by") == "agent":
            record.phase = Phase.SURVEY
            options = self.queue_options(record.queue_id)
            survey = queue_pb2.StartSurvey(
                prompts=[common_pb2.MediaSource(prompt=options.survey_prompt)],
                timeout=duration(10.0),
                language=record.language,
            )
            outcome.say(record.waiting_id, queue_pb2.QueueInstruction(start_survey=survey))
            return
        del self.waits[record.waiting_id]
        outcome.say(record.waiting_id, queue_pb2.QueueInstruction(finish=queue_pb2.Finish()))
        outcome.finished.append(record.waiting_id)

    def _op_survey_answer(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        record = self.waits.get(op["waiting_id"])
        if record is None or record.phase is not Phase.SURVEY:
            return
        del self.waits[record.waiting_id]
        rating = int(op.get("rating", 0))
        if 1 <= rating <= 5:
            answered = calls_pb2.SurveyAnswered(
                queue_id=record.queue_id, agent_user_id=record.agent_id or "", rating=rating
            )
            outcome.events.append(self._event(record.call_id, now, survey_answered=answered))
        outcome.say(record.waiting_id, queue_pb2.QueueInstruction(finish=queue_pb2.Finish()))
        outcome.finished.append(record.waiting_id)

    def _end_connection(self, record: WaitRecord, now: float) -> None:
        agent_id = record.agent_id
        if agent_id is None:
            return
        self.engine.call_ended(agent_id, now)
        self.agents.setdefault(agent_id, AgentRecord(now)).last_call_ended_at = now

    def _op_agent_login(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        self.engine.agent_login(op["agent_id"], now)

    def _op_agent_logout(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        self.engine.agent_logout(op["agent_id"], now)

    def _op_agent_pause(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        self.engine.agent_pause(op["agent_id"], op["reason"], now)

    def _op_agent_unpause(self, op: dict[str, Any], now: float, outcome: Outcome) -> None:
        self.engine.agent_unpause(op["agent_id"], now)

    # ------------------------------------------------------------------ actions

    def _map_actions(self, actions: list[Action], now: float, outcome: Outcome) -> None:
        for action in actions:
            if isinstance(action, AgentStateChanged):
                self.agents.setdefault(action.agent_id, AgentRecord(now)).since = now
                continue
            if isinstance(action, DialCustomer | ApologizeAndOfferVoicemail):
                outcome.unrouted.append(action)
                continue
            record = self.waits.get(action.call_id)
            if record is None:
                continue
            if isinstance(action, OfferCall):
                if action.kind is EntryKind.CALLBACK:
                    outcome.unrouted.append(action)
                    continue
                self._offer(record, action, outcome)
            elif isinstance(action, CancelOffer):
                for offer_id, agent_id in list(record.offers.items()):
                    if agent_id in action.agent_ids:
                        del record.offers[offer_id]
                        outcome.say(record.waiting_id, _cancel(offer_id))
            elif isinstance(action, ConnectCaller):
                self._connect(record, action, now, outcome)
            elif isinstance(action, PlayAnnouncement):
                announce = queue_pb2.Announce(
                    position=action.position or 0, language=record.language
                )
                if action.estimated_wait is not None:
                    announce.estimated_wait.CopyFrom(duration(action.estimated_wait))
                outcome.say(record.waiting_id, queue_pb2.QueueInstruction(announce=announce))
            elif isinstance(action, OverflowCall):
                self._overflowed(record, action, now, outcome)
            elif isinstance(action, CallbackRegistered):
                self._callback_registered(record, action, now, outcome)

    def _offer(self, record: WaitRecord, action: OfferCall, outcome: Outcome) -> None:
        options = self.queue_options(record.queue_id)
        for agent_id in action.agent_ids:
            record.offers_made += 1
            offer_id = f"{record.waiting_id}.{record.offers_made}"
            record.offers[offer_id] = agent_id
            offer = queue_pb2.Offer(
                offer_id=offer_id,
                agent_user_id=agent_id,
                agent_extension=options.agent_extensions.get(agent_id, ""),
                ring_timeout=duration(action.ring_timeout),
                caller_name_prefix=options.caller_name_prefix,
            )
            outcome.say(record.waiting_id, queue_pb2.QueueInstruction(offer=offer))

    def _connect(
        self, record: WaitRecord, action: ConnectCaller, now: float, outcome: Outcome
    ) -> None:
        offer_id = next((o for o, a in record.offers.items() if a == action.agent_id), "")
        record.offers.clear()
        record.phase = Phase.CONNECTED
        record.agent_id = action.agent_id
        record.offer_id = offer_id
        connect = queue_pb2.Connect(
            offer_id=offer_id, record=self.queue_options(record.queue_id).record
        )
        outcome.say(record.waiting_id, queue_pb2.QueueInstruction(connect=connect))
        answered = calls_pb2.QueueAnswered(
            queue_id=record.queue_id,
            waiting_id=record.waiting_id,
            agent_user_id=action.agent_id,
            waited=duration(action.waited),
        )
        outcome.events.append(self._event(record.call_id, now, queue_answered=answered))

    def _overflowed(
        self, record: WaitRecord, action: OverflowCall, now: float, outcome: Outcome
    ) -> None:
        del self.waits[record.waiting_id]
        target = destination(action.target)
        overflow = queue_pb2.Overflow(
            reason=_OVERFLOW_REASONS.get(action.reason, queue_pb2.OVERFLOW_REASON_UNSPECIFIED),
            target=target,
        )
        outcome.say(record.waiting_id, queue_pb2.QueueInstruction(overflow=overflow))
        outcome.finished.append(record.waiting_id)
        left = calls_pb2.QueueLeft(
            queue_id=record.queue_id,
            waiting_id=record.waiting_id,
            reason=_LEFT_REASONS.get(action.reason, calls_pb2.QUEUE_LEFT_REASON_UNSPECIFIED),
            waited=duration(now - record.entered_at),
            next=target,
        )
        outcome.events.append(self._event(record.call_id, now, queue_left=left))

    def _callback_registered(
        self, record: WaitRecord, action: CallbackRegistered, now: float, outcome: Outcome
    ) -> None:
        record.phase = Phase.CALLBACK
        record.offers.clear()
        callback_id = f"cb-{record.waiting_id}"
        options = self.queue_options(record.queue_id)
        accepted = queue_pb2.CallbackAccepted(
            callback_id=callback_id,
            number=action.number,
            position=action.position,
            goodbye=[common_pb2.MediaSource(prompt=options.callback_goodbye_prompt)],
        )
        outcome.say(record.waiting_id, queue_pb2.QueueInstruction(callback_accepted=accepted))
        outcome.finished.append(record.waiting_id)
        requested = calls_pb2.QueueCallbackRequested(
            queue_id=record.queue_id,
            waiting_id=record.waiting_id,
            callback_id=callback_id,
            number=action.number,
            position=action.position,
            waited=duration(now - record.entered_at),
        )
        outcome.events.append(self._event(record.call_id, now, queue_callback_requested=requested))

    def _forget_finished_callbacks(self) -> None:
        """Callback records go once the engine is done with the request (served, given
        up, cancelled): nothing the edge holds refers to them any more."""
        done = [
            waiting_id
            for waiting_id, record in self.waits.items()
            if record.phase is Phase.CALLBACK and self.engine.entry_kind(waiting_id) is None
        ]
        for waiting_id in done:
            del self.waits[waiting_id]

    def _event(self, call_id: str, now: float, **kind: Any) -> calls_pb2.CallEvent:
        return calls_pb2.CallEvent(
            call_id=call_id,
            leg=LEG,
            occurred_at=timestamp(now),
            tenant_id=self.tenant_id,
            **kind,
        )


def _cancel(offer_id: str) -> queue_pb2.QueueInstruction:
    return queue_pb2.QueueInstruction(cancel_offer=queue_pb2.CancelOffer(offer_id=offer_id))
