"""The ACD engine: every queue and agent one replica owns, driven by events with `now` in.

Shape (after aioquic's connection): event methods (`join`, `leave`, `offer_accepted`,
`agent_login`, ...) and `handle_timer(now)` change state and queue actions; the adapter
drains them with `drain_actions()` and asks `next_timer()` when to call back. Nothing here
reads a clock, sleeps or does I/O.

Time rules
----------
* Every call first handles the timers due at or before its `now`, each at its own deadline
  (a ring timeout due at t=15 handled in a call at t=20 behaves as if it fired at t=15).
  So the outcome never depends on how punctually the adapter calls `handle_timer`, and a
  late event sees the state it would have seen on a punctual runtime.
* Timers that fall due together fire in a fixed order (see `timers.TimerKind`), which is
  what lets a restored engine continue exactly like the original.

Shared agents: the one assignment rule
--------------------------------------
An agent may be a member of several queues but is offered at most one call at a time: a
strategy only ever sees agents whose status is `available`, and ringing makes them
`ringing`. Who gets an agent is decided in one place, `_dispatch`, by one ranking of waiting
entries used everywhere (`_rank`):

    1. higher priority class first,
    2. then the earlier join time (the longest-waiting caller across queues),
    3. then the higher queue weight,
    4. then the join sequence number (a total order, so every decision is deterministic).

When an agent becomes free, each of their queues proposes its first waiting entry this
agent may take (skills permitting); the best-ranked proposal wins and is then offered
according to its own queue's strategy (which may pick a different free member, e.g. one
idle for longer; the freed agent then looks again). When several entries become ready at
once they are offered in rank order. Within a queue the order is priority class, then
first come first served; a callback request keeps the place its caller had.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from callmesh_queue.core.actions import (
    Action,
    AgentStateChanged,
    ApologizeAndOfferVoicemail,
    CallbackRegistered,
    CancelOffer,
    CancelReason,
    ConnectCaller,
    DialCustomer,
    GiveUpReason,
    OfferCall,
    OverflowCall,
    PlayAnnouncement,
)
from callmesh_queue.core.errors import (
    DuplicateCall,
    InvalidTransition,
    UnknownAgent,
    UnknownQueue,
)
from callmesh_queue.core.handle_time import HandleTimeHistory, estimate_wait, whole_seconds
from callmesh_queue.core.model import (
    MISSED_CALL_PAUSE_REASON,
    SERVING_STATUSES,
    ActiveCall,
    Agent,
    AgentStatus,
    EntryKind,
    NoAnswerPolicy,
    Offer,
    OverflowReason,
    OverflowTarget,
    QueueConfig,
    RingMode,
    WaitingEntry,
)
from callmesh_queue.core.stats import QueueCounters, QueueFigures
from callmesh_queue.core.strategies import (
    CallerOrdering,
    Candidate,
    DistributionStrategy,
    Registry,
    SelectionContext,
    builtin_orderings,
    builtin_strategies,
)
from callmesh_queue.core.timers import TimerHeap, TimerItem, TimerKind


@dataclass(frozen=True, slots=True)
class JoinResult:
    accepted: bool
    position: int | None
    estimated_wait: int | None
    reason: OverflowReason | None = None
    overflow: OverflowTarget | None = None
    music: str | None = None


@dataclass(slots=True)
class QueueState:
    """One queue's runtime: its line of entries (sorted by place) and its figures."""

    config: QueueConfig
    strategy: DistributionStrategy
    ordering: CallerOrdering
    order: list[WaitingEntry]
    history: HandleTimeHistory
    counters: QueueCounters
    member_index: dict[str, int]
    last_offered_agent: str | None = None


def _place_of(entry: WaitingEntry) -> tuple[int, int]:
    return entry.place


class QueueEngine:
    def __init__(
        self,
        *,
        strategies: Registry[DistributionStrategy] | None = None,
        orderings: Registry[CallerOrdering] | None = None,
    ) -> None:
        self._strategies = strategies if strategies is not None else builtin_strategies()
        self._orderings = orderings if orderings is not None else builtin_orderings()
        self._queues: dict[str, QueueState] = {}
        self._agents: dict[str, Agent] = {}
        # Queues each agent is a member of, in queue creation order.
        self._agent_queues: dict[str, list[str]] = {}
        self._entries: dict[str, WaitingEntry] = {}
        self._offers: dict[int, Offer] = {}
        self._next_seq = 1
        self._next_offer_id = 1
        self._timers = TimerHeap()
        self._actions: list[Action] = []
        # Latest time seen. Time never runs backwards inside the engine: an event stamped
        # earlier (a delayed message, a replica whose clock is slightly behind) is taken
        # as happening now. `now` must be wall-clock seconds shared by all replicas, since
        # a snapshot's deadlines are only meaningful on the same time scale.
        self._clock = float("-inf")
        # Work for `_dispatch`, filled by state changes and drained before any call returns.
        self._freed_agents: list[str] = []
        self._ready_entries: list[str] = []
        self._empty_checks: list[str] = []

    # ------------------------------------------------------------------ configuration

    def configure_queue(self, config: QueueConfig, now: float) -> None:
        """Create or replace a queue definition. Waiting entries keep their places and
        deadlines; removed members that were ringing for this queue are withdrawn."""
        now = self._begin(now)
        strategy = self._strategies.get(config.strategy)
        ordering = self._orderings.get(config.caller_order)
        self._install_queue(config, strategy, ordering)
        state = self._queues[config.queue_id]
        for agent_id in state.member_index:
            agent = self._agents[agent_id]
            if agent.status is AgentStatus.AVAILABLE:
                self._freed_agents.append(agent_id)
        for agent in self._agents.values():
            if agent.status is AgentStatus.RINGING and agent.agent_id not in state.member_index:
                entry = self._entries.get(agent.ringing_for or "")
                if entry is not None and entry.queue_id == config.queue_id:
                    self._withdraw_ring(agent, now, CancelReason.AGENT_UNAVAILABLE)
                    self._become_free(agent, now, after_call=False)
        self._empty_checks.append(config.queue_id)
        self._settle(now)

    def _install_queue(
        self, config: QueueConfig, strategy: DistributionStrategy, ordering: CallerOrdering
    ) -> None:
        qid = config.queue_id
        state = self._queues.get(qid)
        old_members: Iterable[str] = ()
        if state is None:
            state = QueueState(
                config=config,
                strategy=strategy,
                ordering=ordering,
                order=[],
                history=HandleTimeHistory(config.handle_time_window),
                counters=QueueCounters(),
                member_index={},
            )
            self._queues[qid] = state
        else:
            old_members = list(state.member_index)
            state.config = config
            state.strategy = strategy
            state.ordering = ordering
            state.history.window = config.handle_time_window
        state.member_index = {m.agent_id: i for i, m in enumerate(config.members)}
        for agent_id in old_members:
            if agent_id not in state.member_index:
                self._agent_queues[agent_id].remove(qid)
        for agent_id in state.member_index:
            self._agents.setdefault(agent_id, Agent(agent_id))
            queues = self._agent_queues.setdefault(agent_id, [])
            if qid not in queues:
                queues.append(qid)

    # ------------------------------------------------------------------ callers

    def join(
        self,
        queue_id: str,
        call_id: str,
        caller_number: str,
        now: float,
        *,
        priority: int | None = None,
        required_skills: Mapping[str, int] | None = None,
        callback_number: str | None = None,
    ) -> JoinResult:
        """Put a caller in line. With `callback_number` the entry is a callback request
        from the start (e.g. a "call me back" form): no live caller, no announcements."""
        now = self._begin(now)
        state = self._queue(queue_id)
        if call_id in self._entries:
            raise DuplicateCall(f"call {call_id!r} is already waiting")
        cfg = state.config
        if callback_number is not None and not cfg.callbacks_enabled:
            raise InvalidTransition(f"queue {queue_id!r} does not take callback requests")
        klass = state.ordering.priority_class(caller_number, priority, cfg.priority_callers)
        serving, _ = self._agent_counts(state)
        if cfg.reject_when_no_agents and serving == 0:
            return self._reject(state, OverflowReason.NO_AGENTS)
        if cfg.max_length is not None and len(state.order) >= cfg.max_length:
            return self._reject(state, OverflowReason.QUEUE_FULL)
        seq = self._next_seq
        position = bisect.bisect_left(state.order, (-klass, seq), key=_place_of) + 1
        wait = self._estimate(state, position, now)
        threshold = cfg.predicted_wait_threshold
        if threshold is not None and wait is not None and wait > threshold:
            return self._reject(state, OverflowReason.PREDICTED_WAIT)
        self._next_seq += 1
        entry = WaitingEntry(
            call_id=call_id,
            queue_id=queue_id,
            caller_number=caller_number,
            joined_at=now,
            seq=seq,
            priority=klass,
            required_skills=dict(required_skills or {}),
        )
        self._entries[call_id] = entry
        self._insert_in_order(state, entry)
        if cfg.max_wait is not None:
            entry.max_wait_at = now + cfg.max_wait
            self._timers.push(entry.max_wait_at, TimerKind.MAX_WAIT, call_id)
        first = now if cfg.announce_on_join else None
        if cfg.position_announce_interval is not None:
            entry.next_position_at = (
                first if first is not None else now + cfg.position_announce_interval
            )
        if cfg.wait_announce_interval is not None:
            entry.next_wait_at = first if first is not None else now + cfg.wait_announce_interval
        self._reschedule_announce(entry)
        self._ready_entries.append(call_id)
        if callback_number is not None:
            self._make_callback(state, entry, callback_number, now)
        self._settle(now)
        return JoinResult(True, position, whole_seconds(wait), music=cfg.music)

    def _reject(self, state: QueueState, reason: OverflowReason) -> JoinResult:
        state.counters.overflowed += 1
        return JoinResult(False, None, None, reason=reason, overflow=state.config.overflow)

    def leave(self, call_id: str, now: float) -> bool:
        """The caller hung up (or cancelled their callback). False if not waiting any more."""
        now = self._begin(now)
        entry = self._entries.get(call_id)
        if entry is None:
            return False
        state = self._queues[entry.queue_id]
        if entry.dialing_agent is not None:
            # The customer cancelled while being called back; the agent's leg is the
            # adapter's to hang up, and `call_ended` will follow for it.
            del self._entries[call_id]
            state.counters.callbacks_cancelled += 1
            return True
        self._withdraw_offer(entry, now, CancelReason.CALLER_LEFT)
        self._remove_from_order(state, entry, now)
        del self._entries[call_id]
        if entry.kind is EntryKind.LIVE:
            state.counters.record_abandon(
                now - entry.joined_at, state.config.service_level_threshold
            )
        else:
            state.counters.callbacks_cancelled += 1
        self._settle(now)
        return True

    def request_callback(self, call_id: str, now: float, number: str | None = None) -> bool:
        """Turn a waiting live caller into a callback request that keeps their place."""
        now = self._begin(now)
        entry = self._entries.get(call_id)
        if entry is None or entry.kind is EntryKind.CALLBACK:
            return False
        state = self._queues[entry.queue_id]
        cfg = state.config
        if not cfg.callbacks_enabled:
            return False
        if entry.offer_id is not None:
            self._withdraw_offer(entry, now, CancelReason.CALLBACK_REQUESTED)
            self._ready_entries.append(call_id)
        self._make_callback(state, entry, number or entry.caller_number, now)
        self._settle(now)
        return True

    def _make_callback(
        self, state: QueueState, entry: WaitingEntry, number: str, now: float
    ) -> None:
        entry.kind = EntryKind.CALLBACK
        entry.callback_number = number
        entry.callback_requested_at = now
        entry.give_up_at = now + state.config.callback_max_wait
        self._timers.push(entry.give_up_at, TimerKind.GIVE_UP, entry.call_id)
        entry.max_wait_at = None
        entry.next_position_at = entry.next_wait_at = entry.improvement_at = None
        entry.announce_at = None
        state.counters.callbacks_requested += 1
        position = self._position(state, entry)
        self._emit(
            CallbackRegistered(
                queue_id=state.config.queue_id,
                call_id=entry.call_id,
                number=number,
                position=position,
                estimated_wait=whole_seconds(self._estimate(state, position, now)),
            )
        )

    def callback_customer_answered(self, call_id: str, now: float) -> bool:
        now = self._begin(now)
        entry = self._entries.get(call_id)
        if entry is None or entry.dialing_agent is None:
            return False
        state = self._queues[entry.queue_id]
        agent = self._agents[entry.dialing_agent]
        if agent.call is not None and agent.call.call_id == call_id:
            agent.call.customer_connected = True
        del self._entries[call_id]
        state.counters.callbacks_completed += 1
        self._settle(now)
        return True

    def callback_customer_failed(self, call_id: str, now: float) -> bool:
        """The customer did not answer (or was busy): free the agent, retry or give up."""
        now = self._begin(now)
        entry = self._entries.get(call_id)
        if entry is None or entry.dialing_agent is None:
            return False
        agent = self._agents[entry.dialing_agent]
        if agent.call is not None and agent.call.call_id == call_id:
            agent.call = None
            if agent.status is AgentStatus.ON_CALL:
                self._become_free(agent, now, after_call=False)
        self._callback_attempt_failed(entry, now)
        self._settle(now)
        return True

    def _callback_attempt_failed(self, entry: WaitingEntry, now: float) -> None:
        entry.dialing_agent = None
        state = self._queues[entry.queue_id]
        cfg = state.config
        out_of_time = entry.give_up_at is not None and now >= entry.give_up_at
        if entry.callback_attempts >= cfg.callback_max_attempts or out_of_time:
            del self._entries[entry.call_id]
            state.counters.callbacks_failed += 1
            self._emit(
                ApologizeAndOfferVoicemail(
                    queue_id=cfg.queue_id,
                    call_id=entry.call_id,
                    number=entry.callback_number or entry.caller_number,
                    reason=GiveUpReason.CUSTOMER_UNREACHABLE,
                )
            )
            return
        # Back to the very place it had: the order key never changed.
        self._insert_in_order(state, entry)
        if entry.give_up_at is not None:
            self._timers.push(entry.give_up_at, TimerKind.GIVE_UP, entry.call_id)
        self._hold_back(entry, now, cfg.callback_retry_delay)

    # ------------------------------------------------------------------ offers

    def offer_accepted(self, call_id: str, agent_id: str, now: float) -> bool:
        now = self._begin(now)
        entry = self._entries.get(call_id)
        offer = self._offers.get(entry.offer_id) if entry and entry.offer_id else None
        if entry is None or offer is None or agent_id not in offer.ringing:
            self._emit(
                CancelOffer(
                    queue_id=entry.queue_id if entry else "",
                    call_id=call_id,
                    agent_ids=(agent_id,),
                    reason=CancelReason.STALE,
                )
            )
            return False
        state = self._queues[entry.queue_id]
        del offer.ringing[agent_id]
        others = list(offer.ringing)
        offer.ringing.clear()
        del self._offers[offer.offer_id]
        entry.offer_id = None
        if others:
            self._emit(
                CancelOffer(
                    state.config.queue_id, call_id, tuple(others), CancelReason.ANSWERED_ELSEWHERE
                )
            )
            for other_id in others:
                other = self._agents[other_id]
                other.ringing_for = None
                self._become_free(other, now, after_call=False)
        agent = self._agents[agent_id]
        agent.ringing_for = None
        agent.missed_penalty = 0
        agent.missed_penalty_until = 0.0
        agent.call = ActiveCall(
            queue_id=state.config.queue_id,
            call_id=call_id,
            kind=entry.kind,
            answered_at=now,
            customer_connected=entry.kind is EntryKind.LIVE,
        )
        self._set_status(agent, AgentStatus.ON_CALL)
        self._remove_from_order(state, entry, now)
        if entry.kind is EntryKind.LIVE:
            del self._entries[call_id]
            waited = now - entry.joined_at
            state.counters.record_answer(waited, state.config.service_level_threshold)
            self._emit(ConnectCaller(state.config.queue_id, call_id, agent_id, waited))
        else:
            entry.dialing_agent = agent_id
            entry.callback_attempts += 1
            self._emit(
                DialCustomer(
                    queue_id=state.config.queue_id,
                    call_id=call_id,
                    agent_id=agent_id,
                    number=entry.callback_number or entry.caller_number,
                    attempt=entry.callback_attempts,
                )
            )
        self._settle(now)
        return True

    def offer_declined(self, call_id: str, agent_id: str, now: float) -> bool:
        """The agent rejected the offer (or their phone was busy): same as no answer."""
        now = self._begin(now)
        entry = self._entries.get(call_id)
        offer = self._offers.get(entry.offer_id) if entry and entry.offer_id else None
        if offer is None or agent_id not in offer.ringing:
            return False
        self._agent_missed(offer, agent_id, now, timed_out=False)
        self._settle(now)
        return True

    # ------------------------------------------------------------------ agents

    def agent_login(self, agent_id: str, now: float) -> None:
        now = self._begin(now)
        agent = self._agents.setdefault(agent_id, Agent(agent_id))
        self._agent_queues.setdefault(agent_id, [])
        if agent.status is AgentStatus.LOGGED_OUT:
            agent.idle_since = now
            agent.pending_pause_reason = None
            if agent.call is not None:
                # Logged out and back in during a queue call: still on that call.
                self._set_status(agent, AgentStatus.ON_CALL)
            else:
                self._become_free(agent, now, after_call=False)
        self._settle(now)

    def agent_logout(self, agent_id: str, now: float) -> None:
        now = self._begin(now)
        agent = self._agent(agent_id)
        if agent.status is AgentStatus.LOGGED_OUT:
            return
        was_ringing = agent.status is AgentStatus.RINGING
        agent.wrap_up_until = None
        agent.pending_pause_reason = None
        self._set_status(agent, AgentStatus.LOGGED_OUT)
        if was_ringing:
            self._withdraw_ring(agent, now, CancelReason.AGENT_UNAVAILABLE)
        self._empty_checks.extend(self._agent_queues.get(agent_id, ()))
        self._settle(now)

    def agent_pause(self, agent_id: str, reason: str, now: float) -> None:
        """Pause now, or, for an agent on a call or in wrap-up, as soon as that work ends."""
        now = self._begin(now)
        agent = self._agent(agent_id)
        status = agent.status
        if status is AgentStatus.LOGGED_OUT:
            raise InvalidTransition(f"agent {agent_id!r} is logged out and cannot pause")
        if status in (AgentStatus.ON_CALL, AgentStatus.WRAP_UP):
            agent.pending_pause_reason = reason
        else:
            self._set_status(agent, AgentStatus.PAUSED, reason)
            if status is AgentStatus.RINGING:
                self._withdraw_ring(agent, now, CancelReason.AGENT_UNAVAILABLE)
            self._empty_checks.extend(self._agent_queues.get(agent_id, ()))
        self._settle(now)

    def agent_unpause(self, agent_id: str, now: float) -> None:
        now = self._begin(now)
        agent = self._agent(agent_id)
        agent.pending_pause_reason = None
        if agent.status is AgentStatus.PAUSED:
            self._become_free(agent, now, after_call=False)
        self._settle(now)

    def agent_available(self, agent_id: str, now: float) -> None:
        """Make the agent available now: log in, unpause, or end wrap-up early."""
        now = self._begin(now)
        agent = self._agents.get(agent_id)
        if agent is None or agent.status is AgentStatus.LOGGED_OUT:
            self.agent_login(agent_id, now)
            return
        if agent.status is AgentStatus.PAUSED:
            self.agent_unpause(agent_id, now)
            return
        if agent.status is AgentStatus.WRAP_UP:
            agent.wrap_up_until = None
            self._become_free(agent, now, after_call=True)
        elif agent.status is not AgentStatus.AVAILABLE:
            raise InvalidTransition(
                f"agent {agent_id!r} is {agent.status} and cannot be made available"
            )
        self._settle(now)

    def call_ended(self, agent_id: str, now: float) -> None:
        """The agent's queue call is over: record its handle time, then wrap-up."""
        now = self._begin(now)
        agent = self._agent(agent_id)
        call = agent.call
        if call is None:
            raise InvalidTransition(f"agent {agent_id!r} is not on a queue call")
        agent.call = None
        state = self._queues.get(call.queue_id)
        wrap_up = 0.0
        if call.customer_connected:
            if state is not None:
                wrap_up = state.config.wrap_up_time
                state.history.add(now, (now - call.answered_at) + wrap_up)
        else:
            # The agent hung up while the customer was still being dialled back.
            entry = self._entries.get(call.call_id)
            if entry is not None and entry.dialing_agent == agent_id:
                self._callback_attempt_failed(entry, now)
        if agent.status is AgentStatus.ON_CALL:
            if wrap_up > 0:
                agent.wrap_up_until = now + wrap_up
                self._set_status(agent, AgentStatus.WRAP_UP)
                self._timers.push(agent.wrap_up_until, TimerKind.WRAP_UP_END, agent_id)
            else:
                self._become_free(agent, now, after_call=True)
        self._settle(now)

    # ------------------------------------------------------------------ timers, actions

    def next_timer(self) -> float | None:
        while (item := self._timers.peek()) is not None:
            if self._timer_live(item):
                return item[0]
            self._timers.pop()
        return None

    def handle_timer(self, now: float) -> None:
        now = self._begin(now)

    def drain_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    # ------------------------------------------------------------------ queries

    def queue_ids(self) -> list[str]:
        return list(self._queues)

    def queue_config(self, queue_id: str) -> QueueConfig:
        return self._queue(queue_id).config

    def waiting(self, queue_id: str) -> list[str]:
        """Call ids holding a place in this queue, in the order they will be served."""
        return [entry.call_id for entry in self._queue(queue_id).order]

    def position(self, call_id: str) -> int | None:
        entry = self._entries.get(call_id)
        if entry is None or not entry.in_order:
            return None
        return self._position(self._queues[entry.queue_id], entry)

    def entry_kind(self, call_id: str) -> EntryKind | None:
        entry = self._entries.get(call_id)
        return None if entry is None else entry.kind

    def agent_status(self, agent_id: str) -> AgentStatus:
        return self._agent(agent_id).status

    def agent_pause_reason(self, agent_id: str) -> str | None:
        return self._agent(agent_id).pause_reason

    def estimated_wait(self, queue_id: str, position: int, now: float) -> int | None:
        return whole_seconds(self._estimate(self._queue(queue_id), position, now))

    def average_handle_time(self, queue_id: str, now: float) -> float | None:
        return self._queue(queue_id).history.average(now)

    def figures(self, queue_id: str, now: float) -> QueueFigures:
        state = self._queue(queue_id)
        live = [e for e in state.order if e.kind is EntryKind.LIVE]
        callbacks = len(state.order) - len(live) + self._callbacks_being_dialled(state)
        serving, available = self._agent_counts(state)
        counters = state.counters
        return QueueFigures(
            queue_id=queue_id,
            waiting=len(live),
            callbacks_waiting=callbacks,
            longest_wait=max((now - e.joined_at for e in live), default=0.0),
            available_agents=available,
            serving_agents=serving,
            answered=counters.answered,
            answered_within_threshold=counters.answered_within_threshold,
            abandoned=counters.abandoned,
            abandoned_after_threshold=counters.abandoned_after_threshold,
            overflowed=counters.overflowed,
            service_level=counters.service_level(),
            callbacks_completed=counters.callbacks_completed,
            callbacks_failed=counters.callbacks_failed,
            average_handle_time=state.history.average(now),
            estimated_wait_new_caller=whole_seconds(
                self._estimate(state, len(state.order) + 1, now)
            ),
        )

    def _callbacks_being_dialled(self, state: QueueState) -> int:
        count = 0
        for agent_id in state.member_index:
            call = self._agents[agent_id].call
            if (
                call is not None
                and call.kind is EntryKind.CALLBACK
                and call.queue_id == state.config.queue_id
            ):
                entry = self._entries.get(call.call_id)
                count += entry is not None and entry.dialing_agent == agent_id
        return count

    def reset_counters(self, queue_id: str) -> None:
        self._queue(queue_id).counters = QueueCounters()

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> dict[str, Any]:
        """The complete state as plain JSON-compatible data (see `snapshot.py`)."""
        from callmesh_queue.core.snapshot import engine_to_data

        return engine_to_data(self)

    @classmethod
    def restore(
        cls,
        data: Mapping[str, Any],
        *,
        strategies: Registry[DistributionStrategy] | None = None,
        orderings: Registry[CallerOrdering] | None = None,
    ) -> QueueEngine:
        from callmesh_queue.core.snapshot import engine_from_data

        engine = cls(strategies=strategies, orderings=orderings)
        engine_from_data(engine, data)
        return engine

    def _rebuild_timers(self) -> None:
        """Re-arm every deadline from the records (after a restore)."""
        self._timers.clear()
        for agent in self._agents.values():
            if agent.status is AgentStatus.WRAP_UP and agent.wrap_up_until is not None:
                self._timers.push(agent.wrap_up_until, TimerKind.WRAP_UP_END, agent.agent_id)
        for offer in self._offers.values():
            for agent_id, deadline in offer.ringing.items():
                self._timers.push(deadline, TimerKind.RING_TIMEOUT, str(offer.offer_id), agent_id)
            if offer.next_step_at is not None:
                self._timers.push(offer.next_step_at, TimerKind.CASCADE_STEP, str(offer.offer_id))
        for entry in self._entries.values():
            for when, kind in (
                (entry.not_before, TimerKind.ENTRY_READY),
                (entry.max_wait_at, TimerKind.MAX_WAIT),
                (entry.give_up_at, TimerKind.GIVE_UP),
                (entry.announce_at, TimerKind.ANNOUNCE),
            ):
                if when is not None:
                    self._timers.push(when, kind, entry.call_id)

    # ------------------------------------------------------------------ internals

    def _queue(self, queue_id: str) -> QueueState:
        try:
            return self._queues[queue_id]
        except KeyError:
            raise UnknownQueue(queue_id) from None

    def _agent(self, agent_id: str) -> Agent:
        try:
            return self._agents[agent_id]
        except KeyError:
            raise UnknownAgent(agent_id) from None

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _set_status(self, agent: Agent, status: AgentStatus, reason: str | None = None) -> None:
        agent.status = status
        agent.pause_reason = reason if status is AgentStatus.PAUSED else None
        self._emit(AgentStateChanged(agent.agent_id, status, agent.pause_reason))

    def _become_free(self, agent: Agent, now: float, *, after_call: bool) -> None:
        if agent.pending_pause_reason is not None:
            reason, agent.pending_pause_reason = agent.pending_pause_reason, None
            self._set_status(agent, AgentStatus.PAUSED, reason)
            self._empty_checks.extend(self._agent_queues.get(agent.agent_id, ()))
            return
        if after_call:
            agent.idle_since = now
        self._set_status(agent, AgentStatus.AVAILABLE)
        self._freed_agents.append(agent.agent_id)

    def _agent_counts(self, state: QueueState) -> tuple[int, int]:
        """(serving, available) members of a queue."""
        serving = available = 0
        agents = self._agents
        for agent_id in state.member_index:
            status = agents[agent_id].status
            if status in SERVING_STATUSES:
                serving += 1
                if status is AgentStatus.AVAILABLE:
                    available += 1
        return serving, available

    def _estimate(self, state: QueueState, position: int, now: float) -> float | None:
        serving, available = self._agent_counts(state)
        average = state.history.average(now)
        if average is None:
            average = state.config.default_handle_time
        return estimate_wait(position, serving, available, average)

    def _position(self, state: QueueState, entry: WaitingEntry) -> int:
        return bisect.bisect_left(state.order, entry.place, key=_place_of) + 1

    def _insert_in_order(self, state: QueueState, entry: WaitingEntry) -> None:
        index = bisect.bisect_left(state.order, entry.place, key=_place_of)
        state.order.insert(index, entry)

    def _remove_from_order(self, state: QueueState, entry: WaitingEntry, now: float) -> None:
        index = bisect.bisect_left(state.order, entry.place, key=_place_of)
        if index < len(state.order) and state.order[index] is entry:
            del state.order[index]
            self._positions_improved(state, index, now)

    def _rank(self, entry: WaitingEntry) -> tuple[int, float, int, int]:
        weight = self._queues[entry.queue_id].config.weight
        return (-entry.priority, entry.joined_at, -weight, entry.seq)

    def _hold_back(self, entry: WaitingEntry, now: float, delay: float) -> None:
        if delay > 0:
            entry.not_before = now + delay
            self._timers.push(entry.not_before, TimerKind.ENTRY_READY, entry.call_id)
        else:
            entry.not_before = None
            self._ready_entries.append(entry.call_id)

    # -- announcements

    def _positions_improved(self, state: QueueState, start: int, now: float) -> None:
        cfg = state.config
        if not cfg.announce_on_improvement or (
            cfg.position_announce_interval is None and cfg.wait_announce_interval is None
        ):
            return
        for entry in itertools.islice(state.order, start, None):
            if entry.kind is not EntryKind.LIVE or entry.last_announced_at is None:
                continue
            due = max(now, entry.last_announced_at + cfg.announce_min_gap)
            if entry.improvement_at is None or due < entry.improvement_at:
                entry.improvement_at = due
                self._reschedule_announce(entry)

    def _reschedule_announce(self, entry: WaitingEntry) -> None:
        due = [
            t
            for t in (entry.next_position_at, entry.next_wait_at, entry.improvement_at)
            if t is not None
        ]
        when = min(due) if due else None
        if when != entry.announce_at:
            entry.announce_at = when
            if when is not None:
                self._timers.push(when, TimerKind.ANNOUNCE, entry.call_id)

    def _announce(self, entry: WaitingEntry, now: float) -> None:
        state = self._queues[entry.queue_id]
        cfg = state.config
        entry.announce_at = None
        position = self._position(state, entry)
        position_due = entry.next_position_at is not None and entry.next_position_at <= now
        wait_due = entry.next_wait_at is not None and entry.next_wait_at <= now
        improved = False
        if entry.improvement_at is not None and entry.improvement_at <= now:
            entry.improvement_at = None
            improved = entry.last_position is not None and position < entry.last_position
        if position_due and cfg.position_announce_interval is not None:
            entry.next_position_at = now + cfg.position_announce_interval
        if wait_due and cfg.wait_announce_interval is not None:
            entry.next_wait_at = now + cfg.wait_announce_interval
        # Nothing is played to a caller whose call is ringing an agent: they are about to be
        # connected, and a prompt would talk over the moment the agent picks up.
        if entry.offer_id is None:
            say_position = position_due or (improved and cfg.position_announce_interval is not None)
            say_wait = wait_due or (improved and cfg.wait_announce_interval is not None)
            wait = whole_seconds(self._estimate(state, position, now)) if say_wait else None
            if say_position or wait is not None:
                self._emit(
                    PlayAnnouncement(
                        queue_id=cfg.queue_id,
                        call_id=entry.call_id,
                        position=position if say_position else None,
                        estimated_wait=wait,
                    )
                )
                entry.last_announced_at = now
                # Whatever made us speak, the next periodic announcement of the same part
                # counts from now, so a move-up is not followed by a repeat seconds later.
                if say_position:
                    entry.last_position = position
                    if cfg.position_announce_interval is not None:
                        entry.next_position_at = now + cfg.position_announce_interval
                if wait is not None and cfg.wait_announce_interval is not None:
                    entry.next_wait_at = now + cfg.wait_announce_interval
        self._reschedule_announce(entry)

    # -- offers

    def _candidates(self, state: QueueState, entry: WaitingEntry, now: float) -> list[Candidate]:
        candidates = []
        agents = self._agents
        strategy = state.strategy
        for index, member in enumerate(state.config.members):
            agent = agents[member.agent_id]
            if agent.status is not AgentStatus.AVAILABLE:
                continue
            candidate = Candidate(
                agent_id=member.agent_id,
                penalty=member.penalty + agent.penalty_boost(now),
                idle_since=agent.idle_since,
                member_index=index,
                skills=member.skills,
                score=member.score,
            )
            if strategy.accepts(candidate, entry.required_skills):
                candidates.append(candidate)
        return candidates

    def _start_offer(self, entry: WaitingEntry, now: float) -> bool:
        state = self._queues[entry.queue_id]
        cfg = state.config
        candidates = self._candidates(state, entry, now)
        if not candidates:
            return False
        last = state.last_offered_agent
        context = SelectionContext(
            required_skills=entry.required_skills,
            member_count=len(cfg.members),
            last_offered_index=state.member_index.get(last) if last is not None else None,
            round_robin_memory=cfg.round_robin_memory,
            cascade_step=cfg.cascade_step,
        )
        plan = state.strategy.plan(candidates, context)
        # A strategy is a plug-in: never trust it to name only free, eligible agents once.
        allowed = {c.agent_id for c in candidates}
        agent_ids = [a for a in dict.fromkeys(plan.agent_ids) if a in allowed]
        if not agent_ids:
            return False
        offer = Offer(
            offer_id=self._next_offer_id,
            call_id=entry.call_id,
            queue_id=cfg.queue_id,
            mode=plan.mode,
            step=plan.step,
            pending=agent_ids,
            ringing={},
        )
        self._next_offer_id += 1
        self._offers[offer.offer_id] = offer
        entry.offer_id = offer.offer_id
        if plan.mode is RingMode.ALL_AT_ONCE:
            offer.pending = []
            self._ring(offer, agent_ids, now)
        else:
            self._ring_next(offer, now)
            self._schedule_step(offer, now)
        return True

    def _schedule_step(self, offer: Offer, now: float) -> None:
        if offer.mode is RingMode.CASCADE and offer.pending:
            offer.next_step_at = now + offer.step
            self._timers.push(offer.next_step_at, TimerKind.CASCADE_STEP, str(offer.offer_id))
        else:
            offer.next_step_at = None

    def _ring(self, offer: Offer, agent_ids: list[str], now: float) -> None:
        state = self._queues[offer.queue_id]
        cfg = state.config
        entry = self._entries[offer.call_id]
        deadline = now + cfg.ring_timeout
        self._emit(
            OfferCall(
                queue_id=cfg.queue_id,
                call_id=offer.call_id,
                agent_ids=tuple(agent_ids),
                kind=entry.kind,
                caller_number=entry.callback_number or entry.caller_number,
                ring_timeout=cfg.ring_timeout,
            )
        )
        for agent_id in agent_ids:
            agent = self._agents[agent_id]
            agent.ringing_for = offer.call_id
            self._set_status(agent, AgentStatus.RINGING)
            offer.ringing[agent_id] = deadline
            self._timers.push(deadline, TimerKind.RING_TIMEOUT, str(offer.offer_id), agent_id)
        state.last_offered_agent = agent_ids[-1]

    def _ring_next(self, offer: Offer, now: float) -> bool:
        while offer.pending:
            agent_id = offer.pending.pop(0)
            # Planned agents are not reserved: one may have been taken by another caller.
            if self._agents[agent_id].status is AgentStatus.AVAILABLE:
                self._ring(offer, [agent_id], now)
                return True
        return False

    def _advance_offer(self, offer: Offer, now: float) -> None:
        """Someone stopped ringing: ring the next agent, or give the offer up."""
        if offer.offer_id not in self._offers or offer.ringing:
            return
        if offer.mode is not RingMode.ALL_AT_ONCE and self._ring_next(offer, now):
            self._schedule_step(offer, now)
            return
        del self._offers[offer.offer_id]
        entry = self._entries[offer.call_id]
        entry.offer_id = None
        self._hold_back(entry, now, self._queues[offer.queue_id].config.retry_delay)

    def _agent_missed(self, offer: Offer, agent_id: str, now: float, *, timed_out: bool) -> None:
        del offer.ringing[agent_id]
        agent = self._agents[agent_id]
        agent.ringing_for = None
        if timed_out:
            self._emit(
                CancelOffer(offer.queue_id, offer.call_id, (agent_id,), CancelReason.NO_ANSWER)
            )
        cfg = self._queues[offer.queue_id].config
        if cfg.no_answer_policy is NoAnswerPolicy.PAUSE:
            agent.pending_pause_reason = None
            self._set_status(agent, AgentStatus.PAUSED, MISSED_CALL_PAUSE_REASON)
            self._empty_checks.extend(self._agent_queues.get(agent_id, ()))
        else:
            if cfg.no_answer_policy is NoAnswerPolicy.PENALIZE:
                agent.missed_penalty = cfg.missed_penalty
                agent.missed_penalty_until = now + cfg.missed_penalty_seconds
            self._become_free(agent, now, after_call=False)
        self._advance_offer(offer, now)

    def _withdraw_ring(self, agent: Agent, now: float, reason: CancelReason) -> None:
        """Stop ringing one agent without penalty (they logged out, paused, were removed)."""
        entry = self._entries.get(agent.ringing_for or "")
        agent.ringing_for = None
        if entry is None or entry.offer_id is None:
            return
        offer = self._offers[entry.offer_id]
        if offer.ringing.pop(agent.agent_id, None) is None:
            return
        self._emit(CancelOffer(offer.queue_id, offer.call_id, (agent.agent_id,), reason))
        self._advance_offer(offer, now)

    def _withdraw_offer(self, entry: WaitingEntry, now: float, reason: CancelReason) -> None:
        """Stop ringing everyone for this entry; the agents are free again."""
        if entry.offer_id is None:
            return
        offer = self._offers.pop(entry.offer_id)
        entry.offer_id = None
        ringing = list(offer.ringing)
        offer.ringing.clear()
        if ringing:
            self._emit(CancelOffer(offer.queue_id, offer.call_id, tuple(ringing), reason))
        for agent_id in ringing:
            agent = self._agents[agent_id]
            agent.ringing_for = None
            self._become_free(agent, now, after_call=False)

    def _overflow(self, entry: WaitingEntry, reason: OverflowReason, now: float) -> None:
        state = self._queues[entry.queue_id]
        self._withdraw_offer(entry, now, CancelReason.OVERFLOW)
        self._remove_from_order(state, entry, now)
        del self._entries[entry.call_id]
        state.counters.overflowed += 1
        self._emit(
            OverflowCall(state.config.queue_id, entry.call_id, reason, state.config.overflow)
        )

    def _give_up(self, entry: WaitingEntry, now: float) -> None:
        state = self._queues[entry.queue_id]
        self._withdraw_offer(entry, now, CancelReason.GAVE_UP)
        self._remove_from_order(state, entry, now)
        del self._entries[entry.call_id]
        state.counters.callbacks_failed += 1
        reason = (
            GiveUpReason.CUSTOMER_UNREACHABLE
            if entry.callback_attempts > 0
            else GiveUpReason.NO_AGENT_IN_TIME
        )
        self._emit(
            ApologizeAndOfferVoicemail(
                queue_id=state.config.queue_id,
                call_id=entry.call_id,
                number=entry.callback_number or entry.caller_number,
                reason=reason,
            )
        )

    # -- dispatch

    def _begin(self, now: float) -> float:
        """Start of every event: clamp `now` and catch up on the timers due by then."""
        if now < self._clock:
            now = self._clock
        self._clock = now
        self._settle(now)
        return now

    def _settle(self, now: float) -> None:
        """Dispatch pending work, then fire every timer due by `now`, each at its deadline."""
        self._dispatch(now)
        while (item := self._timers.peek()) is not None and item[0] <= now:
            self._timers.pop()
            if self._timer_live(item):
                self._fire(item)
                self._dispatch(item[0])
        self._dispatch(now)

    def _dispatch(self, now: float) -> None:
        while self._empty_checks or self._freed_agents or self._ready_entries:
            if self._empty_checks:
                queue_ids = list(dict.fromkeys(self._empty_checks))
                self._empty_checks.clear()
                for queue_id in queue_ids:
                    self._leave_if_empty(queue_id, now)
                continue
            if self._freed_agents:
                agent_ids = self._freed_agents
                self._freed_agents = []
                for agent_id in agent_ids:
                    self._place_agent(agent_id, now)
                continue
            call_ids = list(dict.fromkeys(self._ready_entries))
            self._ready_entries.clear()
            ready = [
                entry
                for call_id in call_ids
                if (entry := self._entries.get(call_id)) is not None
                and entry.in_order
                and entry.offer_id is None
                and entry.not_before is None
            ]
            ready.sort(key=self._rank)
            for entry in ready:
                if entry.offer_id is None and entry.call_id in self._entries:
                    self._start_offer(entry, now)

    def _place_agent(self, agent_id: str, now: float) -> None:
        """A free agent looks for work: the best-ranked entry they may take across all their
        queues is offered (by its own queue's strategy) until the agent is taken or no
        entry is left for them."""
        agent = self._agents[agent_id]
        tried: set[str] = set()
        while agent.status is AgentStatus.AVAILABLE:
            best: WaitingEntry | None = None
            best_rank: tuple[int, float, int, int] | None = None
            for queue_id in self._agent_queues.get(agent_id, ()):
                state = self._queues[queue_id]
                index = state.member_index[agent_id]
                member = state.config.members[index]
                candidate = Candidate(
                    agent_id=agent_id,
                    penalty=member.penalty + agent.penalty_boost(now),
                    idle_since=agent.idle_since,
                    member_index=index,
                    skills=member.skills,
                    score=member.score,
                )
                for entry in state.order:
                    if (
                        entry.offer_id is not None
                        or entry.not_before is not None
                        or entry.call_id in tried
                        or not state.strategy.accepts(candidate, entry.required_skills)
                    ):
                        continue
                    rank = self._rank(entry)
                    if best_rank is None or rank < best_rank:
                        best, best_rank = entry, rank
                    break
            if best is None:
                return
            tried.add(best.call_id)
            self._start_offer(best, now)

    def _leave_if_empty(self, queue_id: str, now: float) -> None:
        state = self._queues.get(queue_id)
        if state is None or not state.config.leave_when_no_agents:
            return
        serving, _ = self._agent_counts(state)
        if serving > 0:
            return
        for entry in [e for e in state.order if e.kind is EntryKind.LIVE]:
            self._overflow(entry, OverflowReason.NO_AGENTS, now)

    # -- timers

    def _timer_live(self, item: TimerItem) -> bool:
        when, kind, key, subkey = item
        if kind is TimerKind.WRAP_UP_END:
            agent = self._agents.get(key)
            return (
                agent is not None
                and agent.status is AgentStatus.WRAP_UP
                and agent.wrap_up_until == when
            )
        if kind is TimerKind.RING_TIMEOUT or kind is TimerKind.CASCADE_STEP:
            offer = self._offers.get(int(key))
            if offer is None:
                return False
            if kind is TimerKind.RING_TIMEOUT:
                return offer.ringing.get(subkey) == when
            return offer.next_step_at == when
        entry = self._entries.get(key)
        if entry is None or not entry.in_order:
            return False
        if kind is TimerKind.ENTRY_READY:
            return entry.not_before == when
        if kind is TimerKind.MAX_WAIT:
            return entry.kind is EntryKind.LIVE and entry.max_wait_at == when
        if kind is TimerKind.GIVE_UP:
            return entry.kind is EntryKind.CALLBACK and entry.give_up_at == when
        return entry.kind is EntryKind.LIVE and entry.announce_at == when

    def _fire(self, item: TimerItem) -> None:
        when, kind, key, subkey = item
        if kind is TimerKind.WRAP_UP_END:
            agent = self._agents[key]
            agent.wrap_up_until = None
            self._become_free(agent, when, after_call=True)
        elif kind is TimerKind.RING_TIMEOUT:
            self._agent_missed(self._offers[int(key)], subkey, when, timed_out=True)
        elif kind is TimerKind.CASCADE_STEP:
            offer = self._offers[int(key)]
            offer.next_step_at = None
            self._ring_next(offer, when)
            self._schedule_step(offer, when)
        elif kind is TimerKind.ENTRY_READY:
            entry = self._entries[key]
            entry.not_before = None
            self._ready_entries.append(key)
        elif kind is TimerKind.MAX_WAIT:
            self._overflow(self._entries[key], OverflowReason.MAX_WAIT, when)
        elif kind is TimerKind.GIVE_UP:
            self._give_up(self._entries[key], when)
        else:
            self._announce(self._entries[key], when)
