"""Black and white lists: block a caller, route them somewhere, or give them priority.

Each entry is a mask (see `masks`) with an action; when several entries match a number the
most specific mask wins, so "block 7812XXXXXXX" with "route =78121234567 to the VIP desk"
routes that one number and blocks the rest. `default_action` covers numbers no entry matches:
ALLOW for an ordinary blacklist, BLOCK for a gate that admits listed callers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .masks import Mask, MaskMatcher


class ListAction(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"
    ROUTE = "route"
    PRIORITY = "priority"


@dataclass(frozen=True, slots=True)
class ListEntry:
    mask: str
    action: ListAction
    target: str | None = None  # scenario step for ROUTE
    priority: int = 0  # queue priority for PRIORITY
    note: str = ""


@dataclass(frozen=True, slots=True)
class ListVerdict:
    action: ListAction
    target: str | None
    priority: int
    entry: ListEntry | None
    reason: str


@dataclass(slots=True)
class CallerList:
    name: str
    entries: tuple[ListEntry, ...] = ()
    default_action: ListAction = ListAction.ALLOW
    _matcher: MaskMatcher[ListEntry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.default_action not in (ListAction.ALLOW, ListAction.BLOCK):
            raise ValueError("a list's default action is 'allow' or 'block'")
        for entry in self.entries:
            if entry.action is ListAction.ROUTE and not entry.target:
                raise ValueError(f"list entry {entry.mask!r} routes but names no target")
        self._matcher = MaskMatcher((Mask.parse(entry.mask), entry) for entry in self.entries)

    def check(self, digits: str) -> ListVerdict:
        hit = self._matcher.match(digits)
        if hit is None:
            return ListVerdict(
                self.default_action,
                None,
                0,
                None,
                f"list {self.name!r}: {digits} not listed, default {self.default_action.value}",
            )
        entry = hit.payload
        reason = f"list {self.name!r}: {digits} matched {entry.mask!r} -> {entry.action.value}"
        if entry.action is ListAction.ROUTE:
            reason += f" to {entry.target}"
        elif entry.action is ListAction.PRIORITY:
            reason += f" {entry.priority}"
        return ListVerdict(entry.action, entry.target, entry.priority, entry, reason)
