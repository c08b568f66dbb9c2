"""The scenario model: a tenant's call flow as a graph of typed steps, and its validation.

A scenario is plain data, loaded from the api's JSON:

    {"id": "main", "start": "welcome",
     "steps": {"welcome": {"kind": "greeting", "prompt": "hello", "next": "hours"}, ...}}

Step targets name other steps of the same scenario; directory references (ring groups,
users, time conditions, lists, queues, mailboxes, prompts) name objects in the tenant's
`Directory`. `validate` reports every problem at once, each with a path into the document.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .directory import Directory
from .icm import IcmPolicy
from .loading import LoadError, Problem, join, load
from .masks import Mask, MaskError
from .numbers import NumberingPlan

DTMF_KEYS = frozenset("0123456789*#")


@dataclass(frozen=True, slots=True)
class GreetingStep:
    id: str
    prompt: str
    next: str


@dataclass(frozen=True, slots=True)
class MenuStep:
    """An IVR level: options by key, retries, and optional direct extension dialing.

    With `extension_dialing` the caller may key a short number (or, when the tenant allows
    it, an outside number) instead of an option; a single key still selects its option.
    When retries run out without `on_timeout`/`on_invalid`, the call ends politely.
    """

    id: str
    prompt: str
    options: Mapping[str, str] = field(default_factory=dict)
    timeout: int = 5
    max_retries: int = 2
    invalid_prompt: str | None = None
    timeout_prompt: str | None = None
    on_timeout: str | None = None
    on_invalid: str | None = None
    extension_dialing: bool = False
    inter_digit_timeout: int = 3


@dataclass(frozen=True, slots=True)
class TimeConditionStep:
    id: str
    condition: str
    match: str
    no_match: str


class MaskSubject(StrEnum):
    CALLER = "caller"
    DIALLED = "dialled"


@dataclass(frozen=True, slots=True)
class MaskRoute:
    mask: str
    target: str
    priority: int = 0


@dataclass(frozen=True, slots=True)
class NumberMaskStep:
    id: str
    routes: tuple[MaskRoute, ...]
    default: str
    subject: MaskSubject = MaskSubject.CALLER


@dataclass(frozen=True, slots=True)
class ListCheckStep:
    id: str
    list: str
    next: str
    on_block: str | None = None  # None: reject the call


@dataclass(frozen=True, slots=True)
class RingGroupStep:
    id: str
    group: str
    on_no_answer: str | None = None  # None: the group's own no-answer action


@dataclass(frozen=True, slots=True)
class ExtensionStep:
    id: str
    extension: str
    ring_seconds: int = 30
    on_no_answer: str | None = None  # None: the user's mailbox, else hang up


@dataclass(frozen=True, slots=True)
class FollowMeStep:
    id: str
    user: str
    on_no_answer: str | None = None


@dataclass(frozen=True, slots=True)
class IcmStep:
    id: str
    next: str  # the default target when ICM finds nobody
    policy: IcmPolicy = field(default_factory=IcmPolicy)
    ring_seconds: int = 20
    on_no_answer: str | None = None  # None: `next`


@dataclass(frozen=True, slots=True)
class QueueStep:
    id: str
    queue: str
    on_fail: str | None = None


@dataclass(frozen=True, slots=True)
class VoicemailStep:
    id: str
    mailbox: str
    greeting: str | None = None


@dataclass(frozen=True, slots=True)
class ForwardStep:
    id: str
    number: str
    ring_seconds: int = 30
    on_no_answer: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackRequestStep:
    id: str
    prompt: str
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class HangupStep:
    id: str
    prompt: str | None = None


Step = (
    GreetingStep
    | MenuStep
    | TimeConditionStep
    | NumberMaskStep
    | ListCheckStep
    | RingGroupStep
    | ExtensionStep
    | FollowMeStep
    | IcmStep
    | QueueStep
    | VoicemailStep
    | ForwardStep
    | CallbackRequestStep
    | HangupStep
)

STEP_KINDS: Mapping[str, type[Step]] = {
    "greeting": GreetingStep,
    "menu": MenuStep,
    "time_condition": TimeConditionStep,
    "number_mask": NumberMaskStep,
    "list_check": ListCheckStep,
    "ring_group": RingGroupStep,
    "extension": ExtensionStep,
    "follow_me": FollowMeStep,
    "icm": IcmStep,
    "queue": QueueStep,
    "voicemail": VoicemailStep,
    "forward": ForwardStep,
    "callback_request": CallbackRequestStep,
    "hangup": HangupStep,
}

# Steps that can end or hand over the call: a caller reaching one is not stuck.
_EXIT_KINDS = (
    RingGroupStep,
    ExtensionStep,
    FollowMeStep,
    IcmStep,
    QueueStep,
    VoicemailStep,
    ForwardStep,
    CallbackRequestStep,
    HangupStep,
)
# Steps that play nothing and wait for nothing: a cycle of them spins in silence.
_SILENT_KINDS = (TimeConditionStep, NumberMaskStep, ListCheckStep)


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    start: str
    steps: Mapping[str, Step]
    name: str = ""

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> Scenario:
        """Load a scenario; raise `LoadError` listing every shape problem."""
        problems: list[Problem] = []
        scenario = parse_scenario(data, path, problems)
        if scenario is None or problems:
            raise LoadError(problems or [Problem(path, "could not be loaded")])
        return scenario


def parse_scenario(data: object, path: str, problems: list[Problem]) -> Scenario | None:
    if not isinstance(data, Mapping):
        problems.append(Problem(path, "expected an object"))
        return None
    before = len(problems)
    for key in data:
        if key not in ("id", "start", "steps", "name"):
            problems.append(Problem(join(path, str(key)), "unknown field"))
    ident, start, name = data.get("id"), data.get("start"), data.get("name", "")
    for key, value in (("id", ident), ("start", start)):
        if not isinstance(value, str) or not value:
            problems.append(Problem(join(path, key), "is required (a non-empty string)"))
    if not isinstance(name, str):
        problems.append(Problem(join(path, "name"), "expected a string"))
    raw_steps = data.get("steps")
    steps: dict[str, Step] = {}
    if not isinstance(raw_steps, Mapping) or not raw_steps:
        problems.append(Problem(join(path, "steps"), "is required (an object of steps)"))
    else:
        for step_id, body in raw_steps.items():
            step_path = join(join(path, "steps"), str(step_id))
            step = _parse_step(str(step_id), body, step_path, problems)
            if step is not None:
                steps[str(step_id)] = step
    if len(problems) > before:
        return None
    assert isinstance(ident, str) and isinstance(start, str) and isinstance(name, str)
    return Scenario(ident, start, steps, name)


def _parse_step(step_id: str, body: object, path: str, problems: list[Problem]) -> Step | None:
    if not isinstance(body, Mapping):
        problems.append(Problem(path, "expected an object"))
        return None
    kind = body.get("kind")
    cls = STEP_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(STEP_KINDS)
        problems.append(Problem(join(path, "kind"), f"{kind!r} is not a step kind ({known})"))
        return None
    if "id" in body and body["id"] != step_id:
        problems.append(Problem(join(path, "id"), "differs from the step's key"))
        return None
    loaded: Step | None = load(cls, {**body, "id": step_id}, path, problems, skip=("kind",))
    return loaded


def step_targets(step: Step) -> Iterator[tuple[str, str]]:
    """(path relative to the step, target step id) for every edge leaving `step`."""
    match step:
        case GreetingStep(next=target) | ListCheckStep(next=target):
            yield "next", target
            if isinstance(step, ListCheckStep) and step.on_block:
                yield "on_block", step.on_block
        case MenuStep():
            for key, target in step.options.items():
                yield f"options.{key}", target
            if step.on_timeout:
                yield "on_timeout", step.on_timeout
            if step.on_invalid:
                yield "on_invalid", step.on_invalid
        case TimeConditionStep():
            yield "match", step.match
            yield "no_match", step.no_match
        case NumberMaskStep():
            for index, route in enumerate(step.routes):
                yield f"routes.{index}.target", route.target
            yield "default", step.default
        case IcmStep():
            yield "next", step.next
            if step.on_no_answer:
                yield "on_no_answer", step.on_no_answer
        case RingGroupStep() | ExtensionStep() | FollowMeStep() | ForwardStep():
            if step.on_no_answer:
                yield "on_no_answer", step.on_no_answer
        case QueueStep():
            if step.on_fail:
                yield "on_fail", step.on_fail
        case _:
            return


def validate(
    scenario: Scenario, directory: Directory | None = None, plan: NumberingPlan | None = None
) -> list[Problem]:
    """Every problem in `scenario`, in document order; an empty list means it is valid."""
    problems: list[Problem] = []
    steps = scenario.steps
    if scenario.start not in steps:
        problems.append(Problem("start", f"unknown step {scenario.start!r}"))
    for step_id, step in steps.items():
        base = f"steps.{step_id}"
        for rel, target in step_targets(step):
            if target not in steps:
                problems.append(Problem(f"{base}.{rel}", f"unknown step {target!r}"))
        problems.extend(_check_step(step, base, steps, directory, plan))
    problems.extend(_check_graph(scenario, directory))
    return problems


def _list_routes(step: Step, directory: Directory | None) -> list[str]:
    """Steps a list check may route listed callers to (edges only the directory knows)."""
    if not isinstance(step, ListCheckStep) or directory is None:
        return []
    caller_list = directory.caller_list(step.list)
    if caller_list is None:
        return []
    return [entry.target for entry in caller_list.entries if entry.target]


def _check_step(
    step: Step,
    base: str,
    steps: Mapping[str, Step],
    directory: Directory | None,
    plan: NumberingPlan | None,
) -> Iterator[Problem]:
    def prompt(rel: str, name: str | None, required: bool) -> Iterator[Problem]:
        if name is None or name == "":
            if required:
                yield Problem(f"{base}.{rel}", "prompt is missing")
        elif directory is not None and not directory.has_prompt(name):
            yield Problem(f"{base}.{rel}", f"prompt {name!r} does not exist")

    def positive(rel: str, value: int) -> Iterator[Problem]:
        if value <= 0:
            yield Problem(f"{base}.{rel}", "must be a positive number of seconds")

    match step:
        case GreetingStep():
            yield from prompt("prompt", step.prompt, True)
        case MenuStep():
            yield from prompt("prompt", step.prompt, True)
            yield from prompt("invalid_prompt", step.invalid_prompt, False)
            yield from prompt("timeout_prompt", step.timeout_prompt, False)
            yield from positive("timeout", step.timeout)
            yield from positive("inter_digit_timeout", step.inter_digit_timeout)
            if step.max_retries < 0:
                yield Problem(f"{base}.max_retries", "must not be negative")
            for key in step.options:
                if key not in DTMF_KEYS:
                    yield Problem(f"{base}.options.{key}", "an option is one key: 0-9, * or #")
            if not step.options and not step.extension_dialing:
                yield Problem(f"{base}.options", "a menu needs options or extension dialing")
        case TimeConditionStep():
            if directory is not None and directory.time_condition(step.condition) is None:
                yield Problem(f"{base}.condition", f"unknown time condition {step.condition!r}")
        case NumberMaskStep():
            for index, route in enumerate(step.routes):
                try:
                    Mask.parse(route.mask)
                except MaskError as exc:
                    yield Problem(f"{base}.routes.{index}.mask", str(exc))
        case ListCheckStep():
            caller_list = directory.caller_list(step.list) if directory is not None else None
            if directory is not None and caller_list is None:
                yield Problem(f"{base}.list", f"unknown list {step.list!r}")
            for target in _list_routes(step, directory):
                if target not in steps:
                    yield Problem(
                        f"{base}.list", f"list {step.list!r} routes to unknown step {target!r}"
                    )
        case RingGroupStep():
            if directory is not None and directory.ring_group(step.group) is None:
                yield Problem(f"{base}.group", f"unknown ring group {step.group!r}")
        case ExtensionStep():
            yield from positive("ring_seconds", step.ring_seconds)
            if directory is not None and directory.user(step.extension) is None:
                yield Problem(f"{base}.extension", f"unknown user {step.extension!r}")
        case FollowMeStep():
            if directory is not None:
                user = directory.user(step.user)
                if user is None:
                    yield Problem(f"{base}.user", f"unknown user {step.user!r}")
                elif not user.follow_me:
                    yield Problem(f"{base}.user", f"user {step.user!r} has no follow-me list")
        case IcmStep():
            yield from positive("ring_seconds", step.ring_seconds)
            if step.policy.window_days <= 0:
                yield Problem(f"{base}.policy.window_days", "must be a positive number of days")
        case QueueStep():
            if directory is not None and not directory.has_queue(step.queue):
                yield Problem(f"{base}.queue", f"unknown queue {step.queue!r}")
        case VoicemailStep():
            yield from prompt("greeting", step.greeting, False)
            if directory is not None and not directory.has_mailbox(step.mailbox):
                yield Problem(f"{base}.mailbox", f"unknown mailbox {step.mailbox!r}")
        case ForwardStep():
            yield from positive("ring_seconds", step.ring_seconds)
            if plan is not None and plan.to_e164(step.number) is None:
                yield Problem(f"{base}.number", f"{step.number!r} is not a valid outside number")
        case CallbackRequestStep():
            yield from prompt("prompt", step.prompt, True)
            if step.queue and directory is not None and not directory.has_queue(step.queue):
                yield Problem(f"{base}.queue", f"unknown queue {step.queue!r}")
        case HangupStep():
            yield from prompt("prompt", step.prompt, False)


def _is_exit(step: Step) -> bool:
    if isinstance(step, _EXIT_KINDS):
        return True
    # A menu whose retries end without a target hangs up, which is an exit.
    return isinstance(step, MenuStep) and (step.on_timeout is None or step.on_invalid is None)


def _check_graph(scenario: Scenario, directory: Directory | None) -> Iterator[Problem]:
    steps = scenario.steps
    edges = {
        step_id: [
            t
            for t in [*(t for _, t in step_targets(step)), *_list_routes(step, directory)]
            if t in steps
        ]
        for step_id, step in steps.items()
    }
    reachable: set[str] = set()
    pending = [scenario.start] if scenario.start in steps else []
    while pending:
        current = pending.pop()
        if current not in reachable:
            reachable.add(current)
            pending.extend(edges[current])
    for step_id in steps:
        if step_id not in reachable and scenario.start in steps:
            yield Problem(f"steps.{step_id}", "can never be reached from the start")

    # Steps from which some path reaches an exit (reverse reachability from the exits).
    incoming: dict[str, list[str]] = {step_id: [] for step_id in steps}
    for source, targets in edges.items():
        for target in targets:
            incoming[target].append(source)
    can_exit = {step_id for step_id, step in steps.items() if _is_exit(step)}
    pending = list(can_exit)
    while pending:
        current = pending.pop()
        for source in incoming[current]:
            if source not in can_exit:
                can_exit.add(source)
                pending.append(source)
    trapped = {s for s in reachable if s not in can_exit}
    for component in _cycles(trapped, edges):
        members = ", ".join(component)
        yield Problem(f"steps.{component[0]}", f"loop with no exit through steps {members}")

    silent = {s for s in steps if isinstance(steps[s], _SILENT_KINDS)} - trapped
    for component in _cycles(silent, edges):
        members = ", ".join(component)
        yield Problem(
            f"steps.{component[0]}", f"loop of steps that play nothing through steps {members}"
        )


def _cycles(nodes: set[str], edges: Mapping[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of the subgraph on `nodes` that contain a cycle."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        # Recursion depth is bounded by the scenario's size (tens of steps).
        nonlocal counter
        index_of[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in nodes:
                continue
            if target not in index_of:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index_of[target])
        if low[node] == index_of[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index_of:
            visit(node)
    return found
