"""A tenant's directory as routing sees it: users, departments, schedules, lists, numbers.

Scenario steps refer to these objects by name; the api owns them and routing keeps a
read-only copy. Anything a step names may be deleted later, which is why the engine falls
back to the tenant's default route when a lookup here fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from .followme import FollowMe, FollowMeEntry
from .lists import CallerList
from .numbers import NumberClass
from .ringgroups import RingGroup
from .timeconditions import TimeCondition

_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class User:
    extension: str
    name: str = ""
    mailbox: str | None = None
    mobile: str | None = None  # E.164
    permission: NumberClass = NumberClass.LONG_DISTANCE
    follow_me: tuple[FollowMeEntry, ...] = ()

    def follow_me_plan(self) -> FollowMe | None:
        return FollowMe(self.extension, self.follow_me) if self.follow_me else None


class ShortNumberKind(StrEnum):
    USER = "user"
    RING_GROUP = "ring_group"
    QUEUE = "queue"
    VOICEMAIL = "voicemail"
    SCENARIO = "scenario"


@dataclass(frozen=True, slots=True)
class ShortNumber:
    """A short internal number for a department or a service (users' own come for free)."""

    number: str
    kind: ShortNumberKind
    ref: str


@dataclass(slots=True)
class Directory:
    users: tuple[User, ...] = ()
    ring_groups: tuple[RingGroup, ...] = ()
    queues: tuple[str, ...] = ()
    mailboxes: tuple[str, ...] = ()  # shared mailboxes besides users' own
    prompts: tuple[str, ...] | None = None  # uploaded prompts; None = not checked
    time_conditions: tuple[TimeCondition, ...] = ()
    lists: tuple[CallerList, ...] = ()
    short_numbers: tuple[ShortNumber, ...] = ()
    _users: dict[str, User] = field(init=False, repr=False)
    _groups: dict[str, RingGroup] = field(init=False, repr=False)
    _conditions: dict[str, TimeCondition] = field(init=False, repr=False)
    _lists: dict[str, CallerList] = field(init=False, repr=False)
    _short: dict[str, ShortNumber] = field(init=False, repr=False)
    _mailboxes: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._users = _index("user", ((u.extension, u) for u in self.users))
        self._groups = _index("ring group", ((g.name, g) for g in self.ring_groups))
        self._conditions = _index("time condition", ((c.name, c) for c in self.time_conditions))
        self._lists = _index("list", ((lst.name, lst) for lst in self.lists))
        short: list[tuple[str, ShortNumber]] = [
            (u.extension, ShortNumber(u.extension, ShortNumberKind.USER, u.extension))
            for u in self.users
        ]
        short += [
            (g.number, ShortNumber(g.number, ShortNumberKind.RING_GROUP, g.name))
            for g in self.ring_groups
            if g.number
        ]
        short += [(s.number, s) for s in self.short_numbers]
        self._short = _index("short number", short)
        self._mailboxes = frozenset(self.mailboxes) | {u.mailbox for u in self.users if u.mailbox}

    def user(self, extension: str) -> User | None:
        return self._users.get(extension)

    def ring_group(self, name: str) -> RingGroup | None:
        return self._groups.get(name)

    def time_condition(self, name: str) -> TimeCondition | None:
        return self._conditions.get(name)

    def caller_list(self, name: str) -> CallerList | None:
        return self._lists.get(name)

    def short_number(self, number: str) -> ShortNumber | None:
        return self._short.get(number)

    def has_queue(self, name: str) -> bool:
        return name in self.queues

    def has_mailbox(self, name: str) -> bool:
        return name in self._mailboxes

    def has_prompt(self, name: str) -> bool:
        return self.prompts is None or name in self.prompts

    def mobiles(self) -> Mapping[str, str]:
        return {u.extension: u.mobile for u in self.users if u.mobile}


def _index(what: str, items: Iterable[tuple[str, _V]]) -> dict[str, _V]:
    index: dict[str, _V] = {}
    for key, item in items:
        if key in index:
            raise ValueError(f"duplicate {what} {key!r}")
        index[key] = item
    return index
