"""The demo tenant of the issue, as the api would send it: plain JSON-shaped dicts."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

DEMO_DID = "+78123090000"

DEMO_TENANT: dict[str, Any] = {
    "tenant_id": "demo",
    "default_scenario": "fallback",
    "numbering": {"default_region": "RU", "local_prefixes": ["7812"], "max_internal_digits": 3},
    "inbound": {DEMO_DID: "main"},
    "directory": {
        "users": [
            {"extension": "101", "name": "Anna", "mailbox": "101", "permission": "international"},
            {"extension": "102", "name": "Boris", "mailbox": "102", "permission": "local"},
            {
                "extension": "103",
                "name": "Vera",
                "follow_me": [
                    {"targets": ["103"], "ring_seconds": 10},
                    {"targets": ["+79161110103"], "ring_seconds": 20},
                ],
            },
            {"extension": "104", "name": "Gleb", "mailbox": "104", "mobile": "+79161110104"},
        ],
        "ring_groups": [
            {
                "name": "sales",
                "number": "200",
                "members": ["101", "102"],
                "strategy": "all_at_once",
                "no_answer_timeout": 30,
                "no_answer": {"kind": "voicemail", "target": "sales"},
            },
            {
                "name": "support",
                "members": ["103", "104"],
                "strategy": "sequential",
                "step_seconds": 15,
                "no_answer_timeout": 45,
            },
        ],
        "queues": ["support"],
        "mailboxes": ["sales", "general"],
        "prompts": [
            "welcome",
            "main-menu",
            "invalid",
            "no-input",
            "after-hours",
            "callback-ok",
            "technical-difficulties",
        ],
        "time_conditions": [
            {
                "name": "office-hours",
                "timezone": "Europe/Moscow",
                "weekly": [
                    {
                        "name": "weekdays",
                        "days": ["mon", "tue", "wed", "thu", "fri"],
                        "start": "09:00",
                        "end": "18:00",
                    }
                ],
                "holidays": {"country": "RU"},
            }
        ],
        "lists": [
            {
                "name": "blacklist",
                "entries": [
                    {"mask": "=79001234567", "action": "block"},
                    {"mask": "7495", "action": "priority", "priority": 5},
                ],
            }
        ],
    },
    "scenarios": [
        {
            "id": "main",
            "start": "screen",
            "steps": {
                "screen": {"kind": "list_check", "list": "blacklist", "next": "hours"},
                "hours": {
                    "kind": "time_condition",
                    "condition": "office-hours",
                    "match": "welcome",
                    "no_match": "after-hours",
                },
                "welcome": {"kind": "greeting", "prompt": "welcome", "next": "menu"},
                "menu": {
                    "kind": "menu",
                    "prompt": "main-menu",
                    "options": {"1": "sales", "2": "support", "3": "callback", "0": "operator"},
                    "invalid_prompt": "invalid",
                    "timeout_prompt": "no-input",
                    "on_timeout": "operator",
                    "extension_dialing": True,
                },
                "sales": {"kind": "ring_group", "group": "sales"},
                "support": {
                    "kind": "ring_group",
                    "group": "support",
                    "on_no_answer": "support-queue",
                },
                "support-queue": {"kind": "queue", "queue": "support", "on_fail": "voicemail"},
                "callback": {"kind": "callback_request", "prompt": "callback-ok"},
                "operator": {"kind": "icm", "next": "reception", "policy": {"window_days": 30}},
                "reception": {"kind": "extension", "extension": "101"},
                "after-hours": {"kind": "greeting", "prompt": "after-hours", "next": "voicemail"},
                "voicemail": {"kind": "voicemail", "mailbox": "general"},
            },
        },
        {
            "id": "fallback",
            "start": "sorry",
            "steps": {
                "sorry": {"kind": "greeting", "prompt": "technical-difficulties", "next": "leave"},
                "leave": {"kind": "voicemail", "mailbox": "general"},
            },
        },
    ],
}


@pytest.fixture
def demo_tenant_data() -> Callable[[], dict[str, Any]]:
    """A factory of fresh deep copies, so each test may edit its own."""
    return lambda: copy.deepcopy(DEMO_TENANT)
