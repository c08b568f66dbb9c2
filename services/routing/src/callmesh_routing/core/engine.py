"""Stateless interpretation of a tenant's scenario into verbs.

sip-edge calls `plan` when a call arrives and `resume` whenever a verb produces a result
(digits gathered, a dial ended, the queue gave up). Each call returns the next verbs, a short
machine-readable reason per decision taken, and an opaque state token that sip-edge stores
with the call and hands back; nothing is remembered here between calls.

Run-time failures never leave the caller in silence: a step or directory object that has been
deleted since the scenario was saved sends the call to the tenant's default route (the start
of its default scenario), and the reason says so; if the default route fails too, the caller
hears the tenant's failure prompt and the call ends.

What a no-answer does next is decided when the dial is issued and carried in the state as a
"continuation" string (`step:<id>`, `voicemail:<box>`, `group:<name>`, `number:<e164>`,
`message:<prompt>`, `menu:<id>`, `hangup`), so `resume` needs no knowledge of what dialled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from .directory import ShortNumber, ShortNumberKind
from .followme import plan_follow_me
from .icm import IcmSource, decide_icm
from .lists import ListAction
from .numbers import NumberClass, ResolvedNumber
from .ringgroups import (
    MemberState,
    NoAnswerAction,
    NoAnswerKind,
    RingLeg,
    RingPlan,
    plan_ring_group,
)
from .scenario import (
    CallbackRequestStep,
    ExtensionStep,
    FollowMeStep,
    ForwardStep,
    GreetingStep,
    HangupStep,
    IcmStep,
    ListCheckStep,
    MaskSubject,
    MenuStep,
    NumberMaskStep,
    QueueStep,
    RingGroupStep,
    Step,
    TimeConditionStep,
    VoicemailStep,
)
from .tenant import TenantConfig
from .timeconditions import require_aware
from .verbs import (
    Answer,
    CallbackRequest,
    Completed,
    Dial,
    DialLeg,
    DialOutcome,
    DialResult,
    Gather,
    GatherResult,
    Hangup,
    Play,
    Queue,
    QueueOutcome,
    QueueResult,
    TargetKind,
    Verb,
    VerbResult,
    Voicemail,
)

# Steps that play nothing (conditions, masks, lists) chain within one decision; these bound
# a misbehaving chain so a bad configuration degrades to the default route, not a hang.
MAX_STEPS_PER_DECISION = 32
MAX_STEPS_PER_CALL = 400
# Longest outside number keyed into a menu when the tenant allows outside numbers there.
MAX_OUTSIDE_DIGITS = 16
# Ring times where the configuration names none: a user reached by short number, a number
# reached as a no-answer action, and a user's own outside call (the far end decides sooner).
EXTENSION_RING_SECONDS = 30
FORWARD_RING_SECONDS = 30
OUTBOUND_RING_SECONDS = 120


class Origin(StrEnum):
    TRUNK = "trunk"  # an outside caller reached one of the tenant's numbers (DIDs)
    USER = "user"  # one of the tenant's users is calling out or internally


@dataclass(frozen=True, slots=True)
class CallContext:
    call_id: str
    origin: Origin
    caller: str  # as received (From user part); may be empty or "anonymous"
    dialled: str  # as received (Request-URI user part): a DID, short or outside number
    caller_user: str | None = None  # the calling user's extension when origin is USER


@dataclass(frozen=True, slots=True)
class LiveView:
    """What routing cannot own but needs right now: presence, trunk load, ICM sources."""

    presence: Mapping[str, MemberState] = field(default_factory=dict)
    trunk_channels: Mapping[str, int] = field(default_factory=dict)
    icm_sources: Sequence[IcmSource] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    verbs: tuple[Verb, ...]
    reasons: tuple[str, ...]
    state: str  # opaque token for `resume`; empty once the call is finished
    scenario: str = ""  # the scenario the decision ended in (for logs and diagnostics)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    @property
    def finished(self) -> bool:
        return not self.state


# A constant, configured once: `json.dumps` with custom separators builds a new encoder on
# every call, which showed up in the per-decision profile.
_STATE_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


class _Waiting(StrEnum):
    MENU = "menu"  # a Gather for the menu in `step`
    DIAL = "dial"  # a Dial; no-answer goes to `then`
    QUEUE = "queue"  # a Queue; failure goes to `then`
    OUTBOUND = "outbound"  # a user's outside call; any result ends it
    END = "end"  # voicemail and the like; any result ends the call


@dataclass(slots=True)
class _State:
    scenario: str
    step: str = ""
    waiting: _Waiting = _Waiting.END
    then: str = "hangup"
    retries: int = 0
    priority: int = 0
    answered: bool = False
    fell_back: bool = False
    steps_taken: int = 0

    def encode(self) -> str:
        return _STATE_ENCODER.encode(
            [
                1,
                self.scenario,
                self.step,
                self.waiting.value,
                self.then,
                self.retries,
                self.priority,
                self.answered,
                self.fell_back,
                self.steps_taken,
            ]
        )

    @classmethod
    def decode(cls, token: str) -> _State | None:
        try:
            data = json.loads(token)
            (
                version,
                scenario,
                step,
                waiting,
                then,
                retries,
                priority,
                answered,
                fell_back,
                taken,
            ) = data
            if version != 1:
                return None
            state = cls(
                str(scenario),
                str(step),
                _Waiting(waiting),
                str(then),
                int(retries),
                int(priority),
                bool(answered),
                bool(fell_back),
                int(taken),
            )
        except (ValueError, TypeError):
            return None
        return state


class _Stop:
    """Marker: the verbs emitted so far wait for a result (or end the call)."""


_STOP = _Stop()


class _Walk:
    """One decision: walks steps, collecting verbs and reasons, until something waits."""

    def __init__(
        self, tenant: TenantConfig, call: CallContext, now: datetime, live: LiveView, state: _State
    ) -> None:
        self.tenant = tenant
        self.directory = tenant.directory
        self.call = call
        self.now = require_aware(now)
        self.live = live
        self.state = state
        self.verbs: list[Verb] = []
        self.reasons: list[str] = []
        self._steps_here = 0
        self._caller: ResolvedNumber | bool | None = False  # False: not resolved yet

    # -- small helpers -------------------------------------------------------------------

    @property
    def caller(self) -> ResolvedNumber | None:
        if self._caller is False:
            self._caller = self.tenant.numbering.resolve(self.call.caller)
        return self._caller if isinstance(self._caller, ResolvedNumber) else None

    def answer(self) -> None:
        if not self.state.answered:
            self.verbs.append(Answer())
            self.state.answered = True

    def decision(self) -> Decision:
        finished = bool(self.verbs) and isinstance(self.verbs[-1], Hangup)
        token = "" if finished else self.state.encode()
        return Decision(tuple(self.verbs), tuple(self.reasons), token, self.state.scenario)

    def hangup(self, cause: str, sip_status: int = 480) -> _Stop:
        self.verbs.append(Hangup(cause, sip_status))
        self.state.waiting = _Waiting.END
        return _STOP

    # -- the walk ------------------------------------------------------------------------

    def run(self, step_id: str) -> Decision:
        target: str | _Stop = step_id
        while not isinstance(target, _Stop):
            target = self.enter(target)
        return self.decision()

    def enter(self, step_id: str) -> str | _Stop:
        self._steps_here += 1
        self.state.steps_taken += 1
        if self._steps_here > MAX_STEPS_PER_DECISION or self.state.steps_taken > MAX_STEPS_PER_CALL:
            return self.fallback(f"step limit reached at {step_id!r}")
        scenario = self.tenant.scenario(self.state.scenario)
        if scenario is None:
            return self.fallback(f"scenario {self.state.scenario!r} no longer exists")
        step = scenario.steps.get(step_id)
        if step is None:
            return self.fallback(f"step {step_id!r} no longer exists")
        self.state.step = step_id
        return self.step(step)

    def fallback(self, why: str) -> str | _Stop:
        """Send the call to the tenant's default route; if that fails too, end politely."""
        default = self.tenant.scenario(self.tenant.default_scenario)
        # Restarting the default route from inside itself would only fail the same way.
        if self.state.fell_back or default is None or self.state.scenario == default.id:
            self.reasons.append(f"{why}; default route failed too")
            self.answer()
            self.verbs.append(Play(self.tenant.failure_prompt))
            return self.hangup("routing failure", 500)
        self.reasons.append(f"{why}; fell back to the default route")
        self.state.fell_back = True
        self.state.scenario = default.id
        self.state.retries = 0
        self._steps_here = 0
        return default.start

    def step(self, step: Step) -> str | _Stop:
        match step:
            case GreetingStep():
                self.answer()
                self.verbs.append(Play(step.prompt))
                return step.next
            case MenuStep():
                self.state.retries = 0
                return self.gather(step, None)
            case TimeConditionStep():
                condition = self.directory.time_condition(step.condition)
                if condition is None:
                    return self.fallback(f"time condition {step.condition!r} not found")
                verdict = condition.evaluate(self.now)
                self.reasons.append(verdict.reason)
                return step.match if verdict.matched else step.no_match
            case NumberMaskStep():
                return self.number_mask(step)
            case ListCheckStep():
                return self.list_check(step)
            case RingGroupStep():
                group = self.directory.ring_group(step.group)
                if group is None:
                    return self.fallback(f"ring group {step.group!r} not found")
                then = (
                    f"step:{step.on_no_answer}" if step.on_no_answer else _action(group.no_answer)
                )
                return self.dial_plan(
                    plan_ring_group(group, self.live.presence), then, f"ring group {group.name!r}"
                )
            case ExtensionStep():
                user = self.directory.user(step.extension)
                if user is None:
                    return self.fallback(f"user {step.extension!r} not found")
                then = _user_then(step.on_no_answer, user.mailbox)
                return self.dial_user(step.extension, step.ring_seconds, then)
            case FollowMeStep():
                user = self.directory.user(step.user)
                follow_me = user.follow_me_plan() if user else None
                if user is None or follow_me is None:
                    return self.fallback(f"follow-me of user {step.user!r} not found")
                then = _user_then(step.on_no_answer, user.mailbox)
                plan = plan_follow_me(follow_me, self.live.presence)
                return self.dial_plan(plan, then, f"follow-me of {step.user}")
            case IcmStep():
                return self.icm(step)
            case QueueStep():
                if not self.directory.has_queue(step.queue):
                    return self.fallback(f"queue {step.queue!r} not found")
                then = f"step:{step.on_fail}" if step.on_fail else "hangup"
                return self.queue(step.queue, then)
            case VoicemailStep():
                if not self.directory.has_mailbox(step.mailbox):
                    return self.fallback(f"mailbox {step.mailbox!r} not found")
                self.answer()
                self.verbs.append(Voicemail(step.mailbox, step.greeting))
                self.state.waiting = _Waiting.END
                return _STOP
            case ForwardStep():
                then = f"step:{step.on_no_answer}" if step.on_no_answer else "hangup"
                return self.forward(step.number, step.ring_seconds, then)
            case CallbackRequestStep():
                if self.caller is None:
                    # Anonymous or unreadable caller ID: promising a callback would be a lie.
                    self.reasons.append("callback impossible: caller number unknown")
                    return self.hangup("no number to call back")
                self.answer()
                self.verbs.append(Play(step.prompt))
                self.verbs.append(CallbackRequest(self.caller.canonical, step.queue))
                self.reasons.append(f"callback requested for {self.caller.canonical}")
                return self.hangup("callback requested", 200)
            case HangupStep():
                if step.prompt:
                    self.answer()
                    self.verbs.append(Play(step.prompt))
                return self.hangup(f"scenario step {step.id!r}")

    # -- step bodies ---------------------------------------------------------------------

    def gather(self, menu: MenuStep, notice: str | None) -> _Stop:
        self.answer()
        if notice:
            self.verbs.append(Play(notice))
        max_digits = 1
        if menu.extension_dialing:
            max_digits = (
                MAX_OUTSIDE_DIGITS
                if self.tenant.allow_outside_numbers_from_menu
                else self.tenant.numbering.max_internal_digits
            )
        self.verbs.append(
            Gather(menu.prompt, max_digits, menu.timeout, menu.inter_digit_timeout, "#")
        )
        self.state.waiting = _Waiting.MENU
        self.state.step = menu.id
        return _STOP

    def number_mask(self, step: NumberMaskStep) -> str | _Stop:
        if step.subject is MaskSubject.CALLER:
            digits = self.caller.digits if self.caller else ""
        else:
            dialled = self.tenant.numbering.resolve(self.call.dialled)
            digits = dialled.digits if dialled else self.call.dialled
        matcher = self.tenant.mask_matcher(self.state.scenario, step.id)
        hit = matcher.match(digits) if matcher is not None else None
        if hit is None:
            self.reasons.append(f"number mask {step.id!r}: {digits or 'unknown'} matched nothing")
            return step.default
        self.reasons.append(f"number mask {step.id!r}: {digits} matched {hit.mask.text!r}")
        return hit.payload

    def list_check(self, step: ListCheckStep) -> str | _Stop:
        caller_list = self.directory.caller_list(step.list)
        if caller_list is None:
            return self.fallback(f"list {step.list!r} not found")
        verdict = caller_list.check(self.caller.digits if self.caller else "")
        self.reasons.append(verdict.reason)
        if verdict.action is ListAction.BLOCK:
            if step.on_block:
                return step.on_block
            return self.hangup("caller blocked", 603)
        if verdict.action is ListAction.ROUTE and verdict.target:
            return verdict.target
        if verdict.action is ListAction.PRIORITY:
            self.state.priority = max(self.state.priority, verdict.priority)
        return step.next

    def icm(self, step: IcmStep) -> str | _Stop:
        if self.caller is None or self.caller.is_internal:
            self.reasons.append("ICM: caller number unknown")
            return step.next
        known = [u.extension for u in self.directory.users]
        decision = decide_icm(
            step.policy,
            self.caller.canonical,
            self.now,
            self.live.icm_sources,
            self.live.presence,
            self.directory.mobiles(),
            known_employees=frozenset(known),
        )
        self.reasons.append(decision.reason)
        if decision.employee is None:
            return step.next
        then = f"step:{step.on_no_answer or step.next}"
        legs = [RingLeg(target, 0, step.ring_seconds) for target in decision.targets]
        return self.dial_plan(RingPlan("icm", tuple(legs), step.ring_seconds), then, None)

    def dial_user(self, extension: str, ring_seconds: int, then: str) -> str | _Stop:
        state = self.live.presence.get(extension, MemberState())
        if not state.available:
            self.reasons.append(f"user {extension} unavailable")
            return self.continue_with(then)
        plan = RingPlan("single", (RingLeg(extension, 0, ring_seconds),), ring_seconds)
        return self.dial_plan(plan, then, None)

    def dial_plan(self, plan: RingPlan, then: str, label: str | None) -> str | _Stop:
        legs: list[DialLeg] = []
        for leg in plan.legs:
            if leg.target.startswith("+"):
                outside = self.outside_leg(leg.target, leg.start, leg.stop)
                if outside is not None:
                    legs.append(outside)
            else:
                legs.append(DialLeg(leg.target, TargetKind.EXTENSION, leg.start, leg.stop))
        if label is not None:
            skipped = f", skipped {', '.join(plan.skipped)}" if plan.skipped else ""
            ringing = ", ".join(leg.target for leg in legs) or "nobody"
            self.reasons.append(f"{label}: {plan.strategy} ringing {ringing}{skipped}")
        if not legs:
            self.reasons.append("nobody to ring")
            return self.continue_with(then)
        self.verbs.append(Dial(tuple(legs), plan.timeout, plan.strategy))
        self.state.waiting = _Waiting.DIAL
        self.state.then = then
        return _STOP

    def outside_leg(self, number: str, start: int, stop: int) -> DialLeg | None:
        resolved = self.tenant.numbering.resolve(number)
        if resolved is None or resolved.is_internal:
            self.reasons.append(f"{number!r} is not a valid outside number")
            return None
        if self.tenant.lcr is None:
            return DialLeg(resolved.canonical, TargetKind.NUMBER, start, stop)
        lcr = self.tenant.lcr.route(resolved, self.now, self.live.trunk_channels)
        self.reasons.append(lcr.reason)
        if not lcr.routes:
            return None
        return DialLeg(resolved.canonical, TargetKind.NUMBER, start, stop, lcr.trunk_order)

    def forward(self, number: str, ring_seconds: int, then: str) -> str | _Stop:
        leg = self.outside_leg(number, 0, ring_seconds)
        if leg is None:
            return self.continue_with(then)
        self.reasons.append(f"forwarding to {leg.target}")
        self.verbs.append(Dial((leg,), ring_seconds, "forward"))
        self.state.waiting = _Waiting.DIAL
        self.state.then = then
        return _STOP

    def queue(self, name: str, then: str) -> _Stop:
        self.answer()
        self.verbs.append(Queue(name, self.state.priority))
        self.reasons.append(f"queue {name!r} priority {self.state.priority}")
        self.state.waiting = _Waiting.QUEUE
        self.state.then = then
        return _STOP

    def short_number(self, short: ShortNumber, then: str) -> str | _Stop:
        if short.kind is ShortNumberKind.USER:
            user = self.directory.user(short.ref)
            if user is None:
                return self.fallback(f"user {short.ref!r} not found")
            user_then = f"voicemail:{user.mailbox}" if user.mailbox else then
            follow_me = user.follow_me_plan()
            if follow_me is not None:
                plan = plan_follow_me(follow_me, self.live.presence)
                return self.dial_plan(plan, user_then, f"follow-me of {user.extension}")
            return self.dial_user(user.extension, EXTENSION_RING_SECONDS, user_then)
        if short.kind is ShortNumberKind.RING_GROUP:
            return self.continue_with(f"group:{short.ref}", fallback_then=then)
        if short.kind is ShortNumberKind.QUEUE:
            return self.queue(short.ref, then)
        if short.kind is ShortNumberKind.VOICEMAIL:
            return self.continue_with(f"voicemail:{short.ref}")
        scenario = self.tenant.scenario(short.ref)
        if scenario is None:
            return self.fallback(f"scenario {short.ref!r} not found")
        self.state.scenario = scenario.id
        return scenario.start

    # -- continuations -------------------------------------------------------------------

    def continue_with(self, then: str, fallback_then: str = "hangup") -> str | _Stop:
        kind, _, ref = then.partition(":")
        if kind == "step":
            return ref
        if kind == "menu":
            scenario = self.tenant.scenario(self.state.scenario)
            menu = scenario.steps.get(ref) if scenario else None
            if not isinstance(menu, MenuStep):
                return self.fallback(f"menu {ref!r} no longer exists")
            self.state.step = ref
            return self.gather(menu, None)
        if kind == "voicemail":
            if not self.directory.has_mailbox(ref):
                return self.fallback(f"mailbox {ref!r} not found")
            self.answer()
            self.verbs.append(Voicemail(ref))
            self.reasons.append(f"voicemail {ref}")
            self.state.waiting = _Waiting.END
            return _STOP
        if kind == "group":
            group = self.directory.ring_group(ref)
            if group is None:
                return self.fallback(f"ring group {ref!r} not found")
            group_then = _action(group.no_answer)
            if group_then == "hangup":
                group_then = fallback_then
            plan = plan_ring_group(group, self.live.presence)
            return self.dial_plan(plan, group_then, f"ring group {group.name!r}")
        if kind == "number":
            return self.forward(ref, FORWARD_RING_SECONDS, "hangup")
        if kind == "message":
            self.answer()
            self.verbs.append(Play(ref))
            return self.hangup("no answer")
        self.reasons.append("no answer")
        return self.hangup("no answer")


def _action(action: NoAnswerAction) -> str:
    if action.kind is NoAnswerKind.HANGUP:
        return "hangup"
    prefix = "group" if action.kind is NoAnswerKind.RING_GROUP else action.kind.value
    return f"{prefix}:{action.target}"


def _user_then(on_no_answer: str | None, mailbox: str | None) -> str:
    if on_no_answer:
        return f"step:{on_no_answer}"
    return f"voicemail:{mailbox}" if mailbox else "hangup"


# -- public entry points -----------------------------------------------------------------


def plan(tenant: TenantConfig, call: CallContext, now: datetime, live: LiveView) -> Decision:
    """The first verbs for a new call."""
    if call.origin is Origin.USER:
        return _plan_from_user(tenant, call, now, live)
    # Trunks usually send the DID in E.164 already; normalise only when they do not.
    did = call.dialled
    scenario_id = tenant.scenario_for_did(did)
    if scenario_id is None:
        did = tenant.numbering.to_e164(call.dialled) or call.dialled
        scenario_id = tenant.scenario_for_did(did)
    walk = _Walk(tenant, call, now, live, _State(scenario_id or tenant.default_scenario))
    if scenario_id is None:
        walk.reasons.append(f"no scenario for {did}; default route")
    scenario = tenant.scenario(walk.state.scenario)
    if scenario is None:  # the tenant config guarantees it; stay safe anyway
        return _final(walk, "default scenario missing")
    return walk.run(scenario.start)


def _plan_from_user(
    tenant: TenantConfig, call: CallContext, now: datetime, live: LiveView
) -> Decision:
    walk = _Walk(tenant, call, now, live, _State(tenant.default_scenario))
    short = tenant.directory.short_number(call.dialled)
    if short is not None:
        walk.reasons.append(f"internal call to {short.kind.value} {short.ref}")
        target = walk.short_number(short, "hangup")
        if isinstance(target, str):
            return walk.run(target)
        return walk.decision()
    user = tenant.directory.user(call.caller_user or "")
    permission = user.permission if user else NumberClass.INTERNAL
    forced = None
    dialled = call.dialled
    if tenant.lcr is not None:
        forced_trunk, dialled = tenant.lcr.split_carrier_selection(call.dialled)
        forced = forced_trunk.id if forced_trunk else None
    number = tenant.numbering.resolve(dialled)
    if number is None or number.is_internal:
        walk.reasons.append(f"{call.dialled!r} is neither a short number nor a valid number")
        walk.hangup("number not found", 404)
        return walk.decision()
    own = tenant.scenario_for_did(number.canonical)
    own_scenario = tenant.scenario(own) if own is not None else None
    if own_scenario is not None and forced is None:
        # A user calling one of the tenant's own numbers gets its scenario directly instead
        # of a trip out through a trunk and back in.
        walk.reasons.append(f"{number.canonical} is the tenant's own number")
        walk.state.scenario = own_scenario.id
        return walk.run(own_scenario.start)
    walk.state.waiting = _Waiting.OUTBOUND
    if tenant.lcr is None:
        walk.reasons.append("no LCR configured; default trunk")
        leg = DialLeg(number.canonical, TargetKind.NUMBER, 0, OUTBOUND_RING_SECONDS)
        walk.verbs.append(Dial((leg,), OUTBOUND_RING_SECONDS, "outbound"))
        return walk.decision()
    lcr = tenant.lcr.route(number, walk.now, live.trunk_channels, permission, forced)
    walk.reasons.append(lcr.reason)
    if lcr.denied is not None:
        status = 403 if number.number_class > permission else 503
        walk.hangup("not permitted" if status == 403 else "no route", status)
        return walk.decision()
    leg = DialLeg(number.canonical, TargetKind.NUMBER, 0, OUTBOUND_RING_SECONDS, lcr.trunk_order)
    walk.verbs.append(Dial((leg,), OUTBOUND_RING_SECONDS, "outbound"))
    return walk.decision()


def _final(walk: _Walk, why: str) -> Decision:
    walk.state.fell_back = True
    walk.fallback(why)
    return walk.decision()


def resume(
    tenant: TenantConfig,
    call: CallContext,
    now: datetime,
    live: LiveView,
    state_token: str,
    result: VerbResult,
) -> Decision:
    """The next verbs after `result`, given the token of the previous decision."""
    state = _State.decode(state_token)
    if state is None:
        walk = _Walk(tenant, call, now, live, _State(scenario=""))
        walk.state.answered = True  # unknown: assume answered so prompts are heard
        target = walk.fallback("unreadable state token")
        return walk.run(target) if isinstance(target, str) else walk.decision()
    walk = _Walk(tenant, call, now, live, state)
    target = _after(walk, state, result)
    return walk.run(target) if isinstance(target, str) else walk.decision()


def _after(walk: _Walk, state: _State, result: VerbResult) -> str | _Stop:
    if state.waiting is _Waiting.MENU and isinstance(result, GatherResult):
        return _after_menu(walk, result.digits)
    if state.waiting is _Waiting.DIAL and isinstance(result, DialResult):
        if result.outcome is DialOutcome.ANSWERED:
            walk.reasons.append(f"answered by {result.answered_by or 'a target'}")
            return walk.hangup("call completed", 200)
        walk.reasons.append(f"dial ended: {result.outcome.value}")
        return walk.continue_with(state.then)
    if state.waiting is _Waiting.QUEUE and isinstance(result, QueueResult):
        if result.outcome is QueueOutcome.ANSWERED:
            walk.reasons.append("answered from the queue")
            return walk.hangup("call completed", 200)
        walk.reasons.append(f"queue ended: {result.outcome.value}")
        return walk.continue_with(state.then)
    if state.waiting is _Waiting.OUTBOUND and isinstance(result, DialResult):
        statuses = {
            DialOutcome.ANSWERED: 200,
            DialOutcome.BUSY: 486,
            DialOutcome.NO_ANSWER: 480,
            DialOutcome.FAILED: 503,
        }
        walk.reasons.append(f"outside call ended: {result.outcome.value}")
        return walk.hangup(result.outcome.value, statuses[result.outcome])
    if state.waiting is _Waiting.END:
        walk.reasons.append("done")
        return walk.hangup("call completed", 200)
    if isinstance(result, Completed):
        # A verb finished where a result was expected (e.g. the caller hung up mid-menu).
        walk.reasons.append(f"unexpected completion while waiting for {state.waiting.value}")
        return walk.hangup("call completed", 200)
    return walk.fallback(
        f"unexpected {type(result).__name__} while waiting for {state.waiting.value}"
    )


def _after_menu(walk: _Walk, raw_digits: str) -> str | _Stop:
    state = walk.state
    scenario = walk.tenant.scenario(state.scenario)
    menu = scenario.steps.get(state.step) if scenario else None
    if not isinstance(menu, MenuStep):
        return walk.fallback(f"menu {state.step!r} no longer exists")
    digits = raw_digits.rstrip("#")
    if len(digits) == 1 and digits in menu.options:
        walk.reasons.append(f"menu {menu.id!r}: caller pressed {digits}")
        state.retries = 0
        return menu.options[digits]
    if digits and menu.extension_dialing:
        short = walk.directory.short_number(digits)
        if short is not None:
            walk.reasons.append(f"menu {menu.id!r}: caller dialled {short.kind.value} {digits}")
            return walk.short_number(short, f"menu:{menu.id}")
        if walk.tenant.allow_outside_numbers_from_menu:
            number = walk.tenant.numbering.resolve(digits)
            if number is not None and not number.is_internal:
                walk.reasons.append(f"menu {menu.id!r}: caller dialled {number.canonical}")
                return walk.forward(number.canonical, FORWARD_RING_SECONDS, f"menu:{menu.id}")
    state.retries += 1
    timed_out = not digits
    what = "no input" if timed_out else f"invalid input {digits!r}"
    if state.retries > menu.max_retries:
        walk.reasons.append(f"menu {menu.id!r}: {what}, retries exhausted")
        target = menu.on_timeout if timed_out else menu.on_invalid
        if target:
            return target
        walk.answer()
        return walk.hangup("menu retries exhausted")
    walk.reasons.append(f"menu {menu.id!r}: {what}, retry {state.retries}")
    notice = menu.timeout_prompt if timed_out else menu.invalid_prompt
    return walk.gather(menu, notice)
