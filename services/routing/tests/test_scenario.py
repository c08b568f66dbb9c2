from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from callmesh_routing.core.directory import Directory, User
from callmesh_routing.core.loading import LoadError, Problem
from callmesh_routing.core.scenario import (
    GreetingStep,
    MenuStep,
    Scenario,
    VoicemailStep,
    validate,
)
from callmesh_routing.core.tenant import TenantConfig

DemoData = Callable[[], dict[str, Any]]


def test_demo_tenant_loads_and_is_valid(demo_tenant_data: DemoData) -> None:
    tenant = TenantConfig.from_dict(demo_tenant_data())
    assert tenant.problems() == []
    main = tenant.scenario("main")
    assert main is not None
    assert isinstance(main.steps["welcome"], GreetingStep)
    menu = main.steps["menu"]
    assert isinstance(menu, MenuStep)
    assert menu.options["2"] == "support"
    assert menu.extension_dialing
    assert tenant.scenario_for_did("+78123090000") == "main"


def test_scenario_round_trips_through_json_shapes() -> None:
    scenario = Scenario.from_dict(
        {
            "id": "s",
            "start": "a",
            "steps": {
                "a": {"kind": "greeting", "prompt": "p", "next": "b"},
                "b": {"kind": "voicemail", "mailbox": "m"},
            },
        }
    )
    assert scenario.steps["b"] == VoicemailStep("b", "m")
    assert validate(scenario) == []


def test_loader_reports_every_shape_problem_at_once() -> None:
    with pytest.raises(LoadError) as caught:
        Scenario.from_dict(
            {
                "id": "s",
                "colour": "blue",
                "steps": {
                    "a": {"kind": "greeting", "next": "b"},
                    "b": {"kind": "teleport"},
                    "c": {"kind": "menu", "prompt": "p", "timeout": "soon", "options": {"1": 2}},
                    "d": {"kind": "voicemail", "mailbox": "m", "greting": "typo"},
                    "e": {
                        "kind": "number_mask",
                        "routes": [{"mask": "7"}],
                        "default": "a",
                        "subject": "callee",
                    },
                    "f": "hangup",
                },
            }
        )
    found = {(p.path, p.message.split(" (")[0]) for p in caught.value.problems}
    assert found == {
        ("colour", "unknown field"),
        ("start", "is required"),
        ("steps.a.prompt", "is required"),
        ("steps.b.kind", "'teleport' is not a step kind"),
        ("steps.c.timeout", "expected int, got str"),
        ("steps.c.options.1", "expected str, got int"),
        ("steps.d.greting", "unknown field"),
        ("steps.e.routes.0.target", "is required"),
        (
            "steps.e.subject",
            "'callee' is not one of 'caller', 'dialled'",
        ),
        ("steps.f", "expected an object"),
    }


DIRECTORY = Directory(
    users=(User("101", mailbox="101"),),
    queues=("support",),
    prompts=("welcome", "menu"),
)


def test_validate_lists_every_problem_with_its_path() -> None:
    scenario = Scenario.from_dict(
        {
            "id": "broken",
            "start": "welcome",
            "steps": {
                "welcome": {"kind": "greeting", "prompt": "welcome", "next": "menu"},
                "menu": {
                    "kind": "menu",
                    "prompt": "menu",
                    "options": {"1": "sales", "2": "nowhere", "12": "welcome", "3": "q"},
                    "invalid_prompt": "oops",
                    "on_timeout": "welcome",
                    "on_invalid": "welcome",
                    "timeout": 0,
                },
                "sales": {"kind": "ring_group", "group": "sales"},
                "q": {"kind": "queue", "queue": "billing"},
                "orphan": {"kind": "voicemail", "mailbox": "101"},
                "silent": {"kind": "greeting", "prompt": "", "next": "orphan"},
                "mask": {
                    "kind": "number_mask",
                    "routes": [{"mask": "7[", "target": "x"}],
                    "default": "orphan",
                },
                "cb": {"kind": "callback_request", "prompt": "", "queue": "support"},
                "fw": {"kind": "forward", "number": "12"},
                "ext": {"kind": "extension", "extension": "999"},
                "vm": {"kind": "voicemail", "mailbox": "nobody"},
                "tc": {
                    "kind": "time_condition",
                    "condition": "lunch",
                    "match": "vm",
                    "no_match": "vm",
                },
            },
        }
    )
    from callmesh_routing.core.numbers import NumberingPlan

    problems = validate(scenario, DIRECTORY, NumberingPlan("RU"))
    found = {(p.path, p.message) for p in problems}
    assert found == {
        ("steps.menu.options.2", "unknown step 'nowhere'"),
        ("steps.menu.options.12", "an option is one key: 0-9, * or #"),
        ("steps.menu.invalid_prompt", "prompt 'oops' does not exist"),
        ("steps.menu.timeout", "must be a positive number of seconds"),
        ("steps.sales.group", "unknown ring group 'sales'"),
        ("steps.q.queue", "unknown queue 'billing'"),
        ("steps.silent.prompt", "prompt is missing"),
        ("steps.mask.routes.0.target", "unknown step 'x'"),
        ("steps.mask.routes.0.mask", "unclosed '[' at position 1 in '7['"),
        ("steps.cb.prompt", "prompt is missing"),
        ("steps.fw.number", "'12' is not a valid outside number"),
        ("steps.ext.extension", "unknown user '999'"),
        ("steps.vm.mailbox", "unknown mailbox 'nobody'"),
        ("steps.tc.condition", "unknown time condition 'lunch'"),
        ("steps.orphan", "can never be reached from the start"),
        ("steps.silent", "can never be reached from the start"),
        ("steps.mask", "can never be reached from the start"),
        ("steps.cb", "can never be reached from the start"),
        ("steps.fw", "can never be reached from the start"),
        ("steps.ext", "can never be reached from the start"),
        ("steps.vm", "can never be reached from the start"),
        ("steps.tc", "can never be reached from the start"),
    }
    # Problems come in document order: the bad start is checked first, the graph last.
    assert problems[-1].message == "can never be reached from the start"


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (
            # greeting -> menu whose every way out returns to the greeting.
            {
                "a": {"kind": "greeting", "prompt": "p", "next": "m"},
                "m": {
                    "kind": "menu",
                    "prompt": "p",
                    "options": {"1": "a"},
                    "on_timeout": "a",
                    "on_invalid": "a",
                },
            },
            [Problem("steps.a", "loop with no exit through steps a, m")],
        ),
        (
            # The same, but retries end in a hang-up: that is an exit.
            {
                "a": {"kind": "greeting", "prompt": "p", "next": "m"},
                "m": {"kind": "menu", "prompt": "p", "options": {"1": "a"}, "on_timeout": "a"},
            },
            [],
        ),
        (
            # Two steps that play nothing bounce between each other (the voicemail is an
            # exit, so it is not "no exit", but the loop would spin without a sound).
            {
                "a": {"kind": "time_condition", "condition": "c", "match": "vm", "no_match": "b"},
                "b": {"kind": "number_mask", "routes": [], "default": "a"},
                "vm": {"kind": "voicemail", "mailbox": "m"},
            },
            [Problem("steps.a", "loop of steps that play nothing through steps a, b")],
        ),
        (
            # A self-loop and an unknown start.
            {"a": {"kind": "greeting", "prompt": "p", "next": "a"}},
            [Problem("steps.a", "loop with no exit through steps a")],
        ),
    ],
)
def test_loops(steps: dict[str, Any], expected: list[Problem]) -> None:
    scenario = Scenario.from_dict({"id": "s", "start": "a", "steps": steps})
    assert validate(scenario) == expected


def test_unknown_start_is_reported() -> None:
    scenario = Scenario.from_dict({"id": "s", "start": "nope", "steps": {"a": {"kind": "hangup"}}})
    assert validate(scenario) == [Problem("start", "unknown step 'nope'")]


def test_tenant_save_rejects_with_every_problem_across_scenarios(
    demo_tenant_data: DemoData,
) -> None:
    data = demo_tenant_data()
    data["directory"]["ring_groups"] = data["directory"]["ring_groups"][:1]  # support deleted
    data["scenarios"][1]["steps"]["leave"]["mailbox"] = "gone"
    data["inbound"]["+78120000000"] = "missing"
    with pytest.raises(LoadError) as caught:
        TenantConfig.from_dict(data)
    assert {(p.path, p.message) for p in caught.value.problems} == {
        ("scenarios.0.steps.support.group", "unknown ring group 'support'"),
        ("scenarios.1.steps.leave.mailbox", "unknown mailbox 'gone'"),
        ("inbound.+78120000000", "unknown scenario 'missing'"),
    }
    # Routing itself still loads it (strict=False): those steps fall back at run time.
    tenant = TenantConfig.from_dict(data, strict=False)
    assert len(tenant.problems()) == 3


def test_tenant_without_a_usable_default_route_is_refused(demo_tenant_data: DemoData) -> None:
    data = demo_tenant_data()
    data["default_scenario"] = "nope"
    with pytest.raises(LoadError, match="default_scenario: unknown scenario 'nope'"):
        TenantConfig.from_dict(data, strict=False)


def test_tenant_directory_shape_errors_have_paths(demo_tenant_data: DemoData) -> None:
    data = demo_tenant_data()
    data["directory"]["time_conditions"][0]["weekly"][0]["days"] = ["mon", "funday"]
    data["directory"]["time_conditions"][0]["weekly"][0]["start"] = "9am"
    data["directory"]["time_conditions"][0]["timezone"] = "Mars/Base"
    data["directory"]["ring_groups"][0]["strategy"] = "random"
    with pytest.raises(LoadError) as caught:
        TenantConfig.from_dict(data)
    paths = {p.path for p in caught.value.problems}
    assert paths == {
        "directory.time_conditions.0.weekly.0.days.1",
        "directory.time_conditions.0.weekly.0.start",
        "directory.ring_groups.0.strategy",
    }
    # The time zone is checked once the rule shapes are right.
    data = demo_tenant_data()
    data["directory"]["time_conditions"][0]["timezone"] = "Mars/Base"
    with pytest.raises(LoadError, match=r"directory\.time_conditions\.0: unknown time zone"):
        TenantConfig.from_dict(data)


def test_list_routes_count_as_edges_and_must_exist(demo_tenant_data: DemoData) -> None:
    data = demo_tenant_data()
    data["directory"]["lists"][0]["entries"].append(
        {"mask": "=74950000000", "action": "route", "target": "vip"}
    )
    steps = data["scenarios"][0]["steps"]
    # Reachable only through the list: not reported as unreachable.
    steps["vip"] = {"kind": "extension", "extension": "104"}
    assert TenantConfig.from_dict(data).problems() == []
    del steps["vip"]
    with pytest.raises(LoadError) as caught:
        TenantConfig.from_dict(data)
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("scenarios.0.steps.screen.list", "list 'blacklist' routes to unknown step 'vip'")
    ]


def test_bad_icm_exclusion_mask_is_a_load_problem() -> None:
    with pytest.raises(LoadError) as caught:
        Scenario.from_dict(
            {
                "id": "s",
                "start": "icm",
                "steps": {
                    "icm": {
                        "kind": "icm",
                        "next": "bye",
                        "policy": {"excluded_callers": ["7812", "78[12"], "window_days": 7},
                    },
                    "bye": {"kind": "hangup"},
                },
            }
        )
    assert [str(p) for p in caught.value.problems] == [
        "steps.icm.policy: unclosed '[' at position 2 in '78[12'"
    ]


def test_tenant_option_types_are_checked(demo_tenant_data: DemoData) -> None:
    data = demo_tenant_data()
    data["allow_outside_numbers_from_menu"] = "yes"
    data["failure_prompt"] = ""
    data["surprise"] = 1
    with pytest.raises(LoadError) as caught:
        TenantConfig.from_dict(data)
    assert {p.path for p in caught.value.problems} == {
        "allow_outside_numbers_from_menu",
        "failure_prompt",
        "surprise",
    }


def test_time_condition_with_company_days_and_overrides_loads_from_json(
    demo_tenant_data: DemoData,
) -> None:
    from datetime import UTC, datetime

    data = demo_tenant_data()
    condition = data["directory"]["time_conditions"][0]
    condition["holidays"]["company_days"] = {"2026-11-24": "Founders' day"}
    condition["overrides"] = [
        {
            "name": "stocktaking",
            "start": "2026-11-25T09:00:00",
            "end": "2026-11-25T12:00:00",
            "open": False,
        }
    ]
    tenant = TenantConfig.from_dict(data)
    loaded = tenant.directory.time_condition("office-hours")
    assert loaded is not None
    founders = loaded.evaluate(datetime(2026, 11, 24, 8, tzinfo=UTC))
    assert "Founders' day" in founders.reason
    stocktaking = loaded.evaluate(datetime(2026, 11, 25, 7, tzinfo=UTC))  # 10:00 Moscow
    assert not stocktaking.matched and "stocktaking" in stocktaking.reason
    assert loaded.evaluate(datetime(2026, 11, 25, 9, tzinfo=UTC)).matched  # 12:00 Moscow
