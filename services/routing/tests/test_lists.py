from __future__ import annotations

import pytest
from callmesh_routing.core.lists import CallerList, ListAction, ListEntry

BLACKLIST = CallerList(
    "blacklist",
    (
        ListEntry("7812XXXXXXX", ListAction.BLOCK, note="spam wave from St Petersburg"),
        ListEntry("=78121234567", ListAction.ROUTE, target="vip-desk"),
        ListEntry("7495", ListAction.PRIORITY, priority=5),
        ListEntry("re:^7900", ListAction.BLOCK),
    ),
)


@pytest.mark.parametrize(
    ("caller", "action", "target", "priority"),
    [
        ("78127654321", ListAction.BLOCK, None, 0),
        # The exact number is more specific than the pattern blocking its neighbours.
        ("78121234567", ListAction.ROUTE, "vip-desk", 0),
        ("74951112233", ListAction.PRIORITY, None, 5),
        ("79001234567", ListAction.BLOCK, None, 0),
        ("79161234567", ListAction.ALLOW, None, 0),
        ("", ListAction.ALLOW, None, 0),  # anonymous caller
    ],
)
def test_blacklist(caller: str, action: ListAction, target: str | None, priority: int) -> None:
    verdict = BLACKLIST.check(caller)
    assert (verdict.action, verdict.target, verdict.priority) == (action, target, priority)
    assert "blacklist" in verdict.reason


def test_whitelist_gate_blocks_everyone_not_listed() -> None:
    whitelist = CallerList(
        "partners", (ListEntry("7812", ListAction.ALLOW),), default_action=ListAction.BLOCK
    )
    assert whitelist.check("78121234567").action is ListAction.ALLOW
    verdict = whitelist.check("74951234567")
    assert verdict.action is ListAction.BLOCK
    assert verdict.entry is None
    assert "not listed, default block" in verdict.reason


@pytest.mark.parametrize(
    ("entries", "default", "message"),
    [
        ((ListEntry("7", ListAction.ROUTE),), ListAction.ALLOW, "names no target"),
        ((), ListAction.ROUTE, "default action"),
        ((ListEntry("7[", ListAction.BLOCK),), ListAction.ALLOW, "unclosed"),
    ],
)
def test_bad_lists(entries: tuple[ListEntry, ...], default: ListAction, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CallerList("bad", entries, default)
