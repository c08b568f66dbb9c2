from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from callmesh_routing.core.engine import (
    CallContext,
    Decision,
    LiveView,
    Origin,
    plan,
    resume,
)
from callmesh_routing.core.icm import CallHistory
from callmesh_routing.core.lcr import LeastCostRouter, Tariff, Trunk
from callmesh_routing.core.ringgroups import MemberState
from callmesh_routing.core.tenant import TenantConfig
from callmesh_routing.core.verbs import (
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
    Voicemail,
)

DemoData = Callable[[], dict[str, Any]]

OFFICE_HOURS = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # Monday 10:00 Moscow
AFTER_HOURS = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)  # Monday 20:00 Moscow
UNITY_DAY = datetime(2026, 11, 4, 7, 0, tzinfo=UTC)  # Wednesday, a public holiday
CALLER = "+78121234567"


def inbound(caller: str = CALLER) -> CallContext:
    return CallContext("call-1", Origin.TRUNK, caller, "+78123090000")


def ext(target: str, start: int, stop: int) -> DialLeg:
    return DialLeg(target, TargetKind.EXTENSION, start, stop)


@pytest.fixture
def tenant(demo_tenant_data: DemoData) -> TenantConfig:
    return TenantConfig.from_dict(demo_tenant_data())


def test_issue_scenario_greeting_press_2_ring_group_answered(tenant: TenantConfig) -> None:
    live = LiveView()
    first = plan(tenant, inbound(), OFFICE_HOURS, live)
    assert first.verbs == (
        Answer(),
        Play("welcome"),
        Gather("main-menu", max_digits=3, timeout=5, inter_digit_timeout=3, terminators="#"),
    )
    assert first.reasons[0] == "list 'blacklist': 78121234567 not listed, default allow"
    assert first.reasons[1].startswith("time condition 'office-hours' matched: weekly rule")
    assert not first.finished

    second = resume(tenant, inbound(), OFFICE_HOURS, live, first.state, GatherResult("2"))
    assert second.verbs == (Dial((ext("103", 0, 15), ext("104", 15, 30)), 30, "sequential"),)
    assert second.reasons == (
        "menu 'menu': caller pressed 2",
        "ring group 'support': sequential ringing 103, 104",
    )

    third = resume(
        tenant, inbound(), OFFICE_HOURS, live, second.state, DialResult(DialOutcome.ANSWERED, "104")
    )
    assert third.verbs == (Hangup("call completed", 200),)
    assert third.finished


def test_issue_scenario_after_hours_offers_voicemail(tenant: TenantConfig) -> None:
    decision = plan(tenant, inbound(), AFTER_HOURS, LiveView())
    assert decision.verbs == (Answer(), Play("after-hours"), Voicemail("general"))
    assert (
        "time condition 'office-hours' not matched: outside the weekly schedule "
        "(Mon 2026-11-23 20:00 local)"
    ) in decision.reasons
    done = resume(tenant, inbound(), AFTER_HOURS, LiveView(), decision.state, Completed())
    assert done.verbs == (Hangup("call completed", 200),)


def test_public_holiday_goes_to_voicemail_and_says_why(tenant: TenantConfig) -> None:
    decision = plan(tenant, inbound(), UNITY_DAY, LiveView())
    assert decision.verbs[-1] == Voicemail("general")
    assert any("holiday 'Unity Day' on 2026-11-04" in r for r in decision.reasons)


def test_blacklisted_caller_is_rejected_without_answering(tenant: TenantConfig) -> None:
    decision = plan(tenant, inbound("+79001234567"), OFFICE_HOURS, LiveView())
    assert decision.verbs == (Hangup("caller blocked", 603),)
    assert decision.finished
    assert "-> block" in decision.reason


def _walk(
    tenant: TenantConfig, results: list[Any], live: LiveView, caller: str = CALLER
) -> list[Decision]:
    decisions = [plan(tenant, inbound(caller), OFFICE_HOURS, live)]
    for result in results:
        decisions.append(
            resume(tenant, inbound(caller), OFFICE_HOURS, live, decisions[-1].state, result)
        )
    return decisions


def test_unanswered_group_goes_to_queue_with_list_priority_then_voicemail(
    tenant: TenantConfig,
) -> None:
    no_answer = DialResult(DialOutcome.NO_ANSWER)
    decisions = _walk(
        tenant,
        [GatherResult("2"), no_answer, QueueResult(QueueOutcome.TIMEOUT)],
        LiveView(),
        caller="+74951112233",  # on the list with priority 5
    )
    assert decisions[2].verbs == (Queue("support", 5),)
    assert decisions[3].verbs == (Voicemail("general"),)  # already answered: no second Answer
    assert "queue ended: timeout" in decisions[3].reasons


def test_group_without_step_override_uses_its_own_no_answer_action(tenant: TenantConfig) -> None:
    decisions = _walk(tenant, [GatherResult("1"), DialResult(DialOutcome.NO_ANSWER)], LiveView())
    assert decisions[1].verbs == (Dial((ext("101", 0, 30), ext("102", 0, 30)), 30, "all_at_once"),)
    assert decisions[2].verbs == (Voicemail("sales"),)


def test_busy_members_are_skipped_and_empty_group_moves_on_at_once(tenant: TenantConfig) -> None:
    live = LiveView(presence={"103": MemberState(available=False)})
    decisions = _walk(tenant, [GatherResult("2")], live)
    assert decisions[1].verbs == (Dial((ext("104", 0, 15),), 15, "sequential"),)
    assert "skipped 103" in decisions[1].reason
    nobody = LiveView(presence={m: MemberState(available=False) for m in ("103", "104")})
    decisions = _walk(tenant, [GatherResult("2")], nobody)
    assert decisions[1].verbs == (Queue("support", 0),)
    assert "nobody to ring" in decisions[1].reasons


def test_invalid_input_retries_then_hangs_up(tenant: TenantConfig) -> None:
    decisions = _walk(tenant, [GatherResult("7"), GatherResult("9"), GatherResult("8")], LiveView())
    gather = Gather("main-menu", 3, 5, 3, "#")
    assert decisions[1].verbs == (Play("invalid"), gather)
    assert decisions[1].reasons == ("menu 'menu': invalid input '7', retry 1",)
    assert decisions[2].verbs == (Play("invalid"), gather)
    assert decisions[3].verbs == (Hangup("menu retries exhausted", 480),)
    assert decisions[3].reasons == ("menu 'menu': invalid input '8', retries exhausted",)


def test_no_input_retries_then_icm_connects_the_last_employee(tenant: TenantConfig) -> None:
    history = CallHistory()
    history.record(CALLER, "104", OFFICE_HOURS - timedelta(days=3))
    live = LiveView(icm_sources=(history,))
    silent = GatherResult("")
    decisions = _walk(tenant, [silent, silent, silent], live)
    assert decisions[1].verbs == (Play("no-input"), Gather("main-menu", 3, 5, 3, "#"))
    assert decisions[3].verbs == (Dial((ext("104", 0, 20),), 20, "icm"),)
    assert "ICM: last talked to 104 on 2026-11-20 (history)" in decisions[3].reasons


def test_icm_history_older_than_the_window_goes_to_the_default_target(
    tenant: TenantConfig,
) -> None:
    history = CallHistory()
    history.record(CALLER, "104", OFFICE_HOURS - timedelta(days=31))
    live = LiveView(icm_sources=(history,))
    decisions = _walk(tenant, [GatherResult("0"), DialResult(DialOutcome.NO_ANSWER)], live)
    assert decisions[1].verbs == (Dial((ext("101", 0, 30),), 30, "single"),)
    assert any(r.startswith("ICM: nobody talked with +78121234567") for r in decisions[1].reasons)
    # Reception does not answer: Anna's own mailbox.
    assert decisions[2].verbs == (Voicemail("101"),)


def test_callback_request(tenant: TenantConfig) -> None:
    decisions = _walk(tenant, [GatherResult("3")], LiveView())
    assert decisions[1].verbs == (
        Play("callback-ok"),
        CallbackRequest("+78121234567", None),
        Hangup("callback requested", 200),
    )
    assert decisions[1].finished


@pytest.mark.parametrize(
    ("digits", "verbs"),
    [
        # A user's extension; unanswered, it goes to that user's mailbox.
        ("102", (Dial((ext("102", 0, 30),), 30, "single"),)),
        # A department's short number.
        ("200", (Dial((ext("101", 0, 30), ext("102", 0, 30)), 30, "all_at_once"),)),
        # Follow-me: desk phone, then the mobile (no LCR configured: default trunk).
        (
            "103",
            (
                Dial(
                    (
                        ext("103", 0, 10),
                        DialLeg("+79161110103", TargetKind.NUMBER, 10, 30),
                    ),
                    30,
                    "follow_me",
                ),
            ),
        ),
    ],
)
def test_direct_extension_dialing_from_the_menu(
    tenant: TenantConfig, digits: str, verbs: tuple[Any, ...]
) -> None:
    decisions = _walk(tenant, [GatherResult(digits + "#")], LiveView())
    assert decisions[1].verbs == verbs


def test_unanswered_extension_from_the_menu_goes_to_its_mailbox(tenant: TenantConfig) -> None:
    decisions = _walk(tenant, [GatherResult("102"), DialResult(DialOutcome.NO_ANSWER)], LiveView())
    assert decisions[2].verbs == (Voicemail("102"),)


def test_outside_numbers_from_the_menu_need_the_tenant_option(demo_tenant_data: DemoData) -> None:
    data = demo_tenant_data()
    closed = TenantConfig.from_dict(data)
    decisions = _walk(closed, [GatherResult("89161234567")], LiveView())
    assert decisions[1].verbs[0] == Play("invalid")
    data["allow_outside_numbers_from_menu"] = True
    lcr = LeastCostRouter.build([Trunk("alpha")], [("alpha", "7", Tariff(Decimal("1")))])
    opened = TenantConfig.from_dict(data, lcr=lcr)
    decisions = _walk(
        opened, [GatherResult("89161234567"), DialResult(DialOutcome.BUSY)], LiveView()
    )
    assert decisions[0].verbs[-1] == Gather("main-menu", 16, 5, 3, "#")
    assert decisions[1].verbs == (
        Dial((DialLeg("+79161234567", TargetKind.NUMBER, 0, 30, ("alpha",)),), 30, "forward"),
    )
    # Busy: back to the menu.
    assert decisions[2].verbs == (Gather("main-menu", 16, 5, 3, "#"),)


def test_deleted_ring_group_falls_back_to_the_default_route(demo_tenant_data: DemoData) -> None:
    data = demo_tenant_data()
    data["directory"]["ring_groups"] = data["directory"]["ring_groups"][:1]
    tenant = TenantConfig.from_dict(data, strict=False)
    decisions = _walk(tenant, [GatherResult("2")], LiveView())
    assert decisions[1].verbs == (Play("technical-difficulties"), Voicemail("general"))
    assert decisions[1].reasons == (
        "menu 'menu': caller pressed 2",
        "ring group 'support' not found; fell back to the default route",
    )


def test_step_deleted_between_plan_and_continue_falls_back(demo_tenant_data: DemoData) -> None:
    before = TenantConfig.from_dict(demo_tenant_data())
    first = plan(before, inbound(), OFFICE_HOURS, LiveView())
    data = demo_tenant_data()
    steps = data["scenarios"][0]["steps"]
    del steps["menu"]
    steps["welcome"]["next"] = "sales"
    after = TenantConfig.from_dict(data, strict=False)  # other steps became unreachable
    decision = resume(after, inbound(), OFFICE_HOURS, LiveView(), first.state, GatherResult("1"))
    assert decision.verbs == (Play("technical-difficulties"), Voicemail("general"))
    assert decision.reasons == ("menu 'menu' no longer exists; fell back to the default route",)


def test_default_route_failing_too_ends_with_the_failure_prompt(
    demo_tenant_data: DemoData,
) -> None:
    data = demo_tenant_data()
    data["directory"]["ring_groups"] = data["directory"]["ring_groups"][:1]
    data["directory"]["mailboxes"] = ["sales"]  # "general" deleted as well
    tenant = TenantConfig.from_dict(data, strict=False)
    decisions = _walk(tenant, [GatherResult("2")], LiveView())
    assert decisions[1].verbs == (
        Play("technical-difficulties"),
        Play("technical-difficulties"),
        Hangup("routing failure", 500),
    )
    assert decisions[1].reasons[-1] == "mailbox 'general' not found; default route failed too"


def test_unknown_did_and_unreadable_state_use_the_default_route(tenant: TenantConfig) -> None:
    call = CallContext("c", Origin.TRUNK, CALLER, "+78120000000")
    decision = plan(tenant, call, OFFICE_HOURS, LiveView())
    assert decision.verbs == (Answer(), Play("technical-difficulties"), Voicemail("general"))
    assert decision.reasons[0] == "no scenario for +78120000000; default route"
    garbled = resume(tenant, inbound(), OFFICE_HOURS, LiveView(), "not json", GatherResult("1"))
    assert garbled.verbs == (Play("technical-difficulties"), Voicemail("general"))
    assert "unreadable state token" in garbled.reason


def test_silent_loop_hits_the_step_limit_and_falls_back(demo_tenant_data: DemoData) -> None:
    data = demo_tenant_data()
    data["scenarios"][0]["steps"]["hours"]["no_match"] = "spin"
    data["scenarios"][0]["steps"]["spin"] = {
        "kind": "number_mask",
        "routes": [],
        "default": "hours",
    }
    tenant = TenantConfig.from_dict(data, strict=False)
    assert any("play nothing" in p.message for p in tenant.problems())
    decision = plan(tenant, inbound(), AFTER_HOURS, LiveView())
    assert decision.verbs == (Answer(), Play("technical-difficulties"), Voicemail("general"))
    assert "step limit reached" in decision.reasons[-1]


def test_number_mask_routes_by_caller(demo_tenant_data: DemoData) -> None:
    data = demo_tenant_data()
    steps = data["scenarios"][0]["steps"]
    steps["welcome"]["next"] = "by-region"
    steps["by-region"] = {
        "kind": "number_mask",
        "routes": [
            {"mask": "7812", "target": "support"},
            {"mask": "7812XXXXXXX", "target": "sales"},
        ],
        "default": "menu",
    }
    tenant = TenantConfig.from_dict(data)
    spb = plan(tenant, inbound(), OFFICE_HOURS, LiveView())
    assert spb.verbs[-1] == Dial((ext("101", 0, 30), ext("102", 0, 30)), 30, "all_at_once")
    assert "number mask 'by-region': 78121234567 matched '7812XXXXXXX'" in spb.reasons
    other = plan(tenant, inbound("+74951234567"), OFFICE_HOURS, LiveView())
    assert isinstance(other.verbs[-1], Gather)


# -- calls from users --------------------------------------------------------------------

TRUNKS = (
    Trunk("cheap", channel_limit=2, timezone="Europe/Moscow"),
    Trunk("backup", timezone="Europe/Moscow", selection_prefix="*77"),
)
RATES = [
    ("cheap", "7", Tariff(Decimal("0.30"))),
    ("backup", "7", Tariff(Decimal("0.90"))),
    ("backup", "44", Tariff(Decimal("2.00"))),
]


@pytest.fixture
def with_lcr(demo_tenant_data: DemoData) -> TenantConfig:
    return TenantConfig.from_dict(demo_tenant_data(), lcr=LeastCostRouter.build(TRUNKS, RATES))


def from_user(user: str, dialled: str) -> CallContext:
    return CallContext("call-2", Origin.USER, user, dialled, caller_user=user)


def outside(number: str, trunks: tuple[str, ...]) -> Dial:
    return Dial((DialLeg(number, TargetKind.NUMBER, 0, 120, trunks),), 120, "outbound")


@pytest.mark.parametrize(
    ("user", "dialled", "channels", "verbs", "reason_part"),
    [
        (
            "101",
            "8 812 765-43-21",
            {},
            (outside("+78127654321", ("cheap", "backup")),),
            "cheap@0.30",
        ),
        # The cheap trunk is at its channel limit: only the backup is offered.
        (
            "101",
            "88127654321",
            {"cheap": 2},
            (outside("+78127654321", ("backup",)),),
            "skipped cheap at channel limit 2/2",
        ),
        ("101", "810442079460958", {}, (outside("+442079460958", ("backup",)),), "backup@2.00"),
        # 102 may only call locally.
        ("102", "88127654321", {}, (outside("+78127654321", ("cheap", "backup")),), "cheap"),
        (
            "102",
            "84951234567",
            {},
            (Hangup("not permitted", 403),),
            "long_distance call to +74951234567 not allowed for permission class local",
        ),
        # Manual carrier selection.
        ("101", "*7788127654321", {}, (outside("+78127654321", ("backup",)),), "carrier selected"),
        ("101", "99999", {}, (Hangup("number not found", 404),), "neither a short number"),
    ],
)
def test_outbound_calls(
    with_lcr: TenantConfig,
    user: str,
    dialled: str,
    channels: dict[str, int],
    verbs: tuple[Any, ...],
    reason_part: str,
) -> None:
    decision = plan(
        with_lcr, from_user(user, dialled), OFFICE_HOURS, LiveView(trunk_channels=channels)
    )
    assert decision.verbs == verbs
    assert reason_part in decision.reason


def test_outbound_dial_result_ends_the_call(with_lcr: TenantConfig) -> None:
    call = from_user("101", "88127654321")
    first = plan(with_lcr, call, OFFICE_HOURS, LiveView())
    failed = resume(
        with_lcr, call, OFFICE_HOURS, LiveView(), first.state, DialResult(DialOutcome.FAILED)
    )
    assert failed.verbs == (Hangup("failed", 503),)


@pytest.mark.parametrize(
    ("dialled", "verbs", "reason"),
    [
        ("101", (Dial((ext("101", 0, 30),), 30, "single"),), "internal call to user 101"),
        (
            "200",
            (Dial((ext("101", 0, 30), ext("102", 0, 30)), 30, "all_at_once"),),
            "internal call to ring_group sales",
        ),
    ],
)
def test_internal_calls(
    tenant: TenantConfig, dialled: str, verbs: tuple[Any, ...], reason: str
) -> None:
    decision = plan(tenant, from_user("102", dialled), OFFICE_HOURS, LiveView())
    assert decision.verbs == verbs
    assert decision.reasons[0] == reason
    unanswered = resume(
        tenant,
        from_user("102", dialled),
        OFFICE_HOURS,
        LiveView(),
        decision.state,
        DialResult(DialOutcome.NO_ANSWER),
    )
    assert unanswered.verbs[-1] == Voicemail("101" if dialled == "101" else "sales")
    assert unanswered.verbs[0] == Answer()


def test_callback_needs_a_caller_number(tenant: TenantConfig) -> None:
    decisions = _walk(tenant, [GatherResult("3")], LiveView(), caller="anonymous")
    assert decisions[1].verbs == (Hangup("no number to call back", 480),)
    assert "callback impossible: caller number unknown" in decisions[1].reasons


def test_a_result_that_does_not_fit_falls_back(tenant: TenantConfig) -> None:
    first = plan(tenant, inbound(), OFFICE_HOURS, LiveView())  # waiting for menu digits
    odd = resume(
        tenant, inbound(), OFFICE_HOURS, LiveView(), first.state, QueueResult(QueueOutcome.FULL)
    )
    assert odd.verbs == (Play("technical-difficulties"), Voicemail("general"))
    assert odd.reasons == (
        "unexpected QueueResult while waiting for menu; fell back to the default route",
    )


def test_icm_ignores_employees_who_left_and_excluded_callers(demo_tenant_data: DemoData) -> None:
    data = demo_tenant_data()
    data["scenarios"][0]["steps"]["operator"]["policy"] = {
        "window_days": 30,
        "excluded_callers": ["7495"],
        "also_mobile": True,
    }
    tenant = TenantConfig.from_dict(data)
    history = CallHistory()
    history.record(CALLER, "104", OFFICE_HOURS - timedelta(days=2))
    history.record(CALLER, "199", OFFICE_HOURS - timedelta(days=1))  # has left the company
    history.record("+74951234567", "104", OFFICE_HOURS - timedelta(days=1))
    live = LiveView(icm_sources=(history,))
    decisions = _walk(tenant, [GatherResult("0")], live)
    mobile = DialLeg("+79161110104", TargetKind.NUMBER, 0, 20)
    assert decisions[1].verbs == (Dial((ext("104", 0, 20), mobile), 20, "icm"),)
    # 199 talked to the caller more recently but no longer exists; 104 is next.
    assert "ICM: last talked to 104 on 2026-11-21 (history)" in decisions[1].reasons
    excluded = _walk(tenant, [GatherResult("0")], live, caller="+74951234567")
    assert "ICM: caller excluded by '7495'" in excluded[1].reasons
    assert excluded[1].verbs == (Dial((ext("101", 0, 30),), 30, "single"),)


def test_failure_inside_the_default_route_ends_without_restarting_it(
    demo_tenant_data: DemoData,
) -> None:
    data = demo_tenant_data()
    data["directory"]["mailboxes"] = ["sales"]  # the default route's mailbox is gone
    tenant = TenantConfig.from_dict(data, strict=False)
    call = CallContext("c", Origin.TRUNK, CALLER, "+78120000000")  # no scenario: default
    decision = plan(tenant, call, OFFICE_HOURS, LiveView())
    assert decision.verbs == (
        Answer(),
        Play("technical-difficulties"),  # the default scenario's own greeting
        Play("technical-difficulties"),  # the failure prompt
        Hangup("routing failure", 500),
    )
    assert decision.reasons[-1] == "mailbox 'general' not found; default route failed too"
    assert decision.finished


@pytest.mark.parametrize(
    ("no_answer", "verbs"),
    [
        ({"kind": "voicemail", "target": "sales"}, (Voicemail("sales"),)),
        (
            {"kind": "ring_group", "target": "support"},
            (Dial((ext("103", 0, 15), ext("104", 15, 30)), 30, "sequential"),),
        ),
        (
            {"kind": "number", "target": "+79161112233"},
            (
                Dial(
                    (DialLeg("+79161112233", TargetKind.NUMBER, 0, 30, ("cheap", "backup")),),
                    30,
                    "forward",
                ),
            ),
        ),
        ({"kind": "message", "target": "after-hours"}, (Play("after-hours"), Hangup("no answer"))),
        ({"kind": "hangup"}, (Hangup("no answer"),)),
    ],
)
def test_ring_group_no_answer_actions(
    demo_tenant_data: DemoData, no_answer: dict[str, str], verbs: tuple[Any, ...]
) -> None:
    data = demo_tenant_data()
    data["directory"]["ring_groups"][0]["no_answer"] = no_answer
    tenant = TenantConfig.from_dict(data, lcr=LeastCostRouter.build(TRUNKS, RATES))
    decisions = _walk(tenant, [GatherResult("1"), DialResult(DialOutcome.NO_ANSWER)], LiveView())
    assert decisions[2].verbs == verbs
    assert decisions[2].reasons[0] == "dial ended: no_answer"


def test_a_user_calling_the_tenants_own_number_gets_its_scenario(with_lcr: TenantConfig) -> None:
    decision = plan(with_lcr, from_user("101", "8 812 309-00-00"), OFFICE_HOURS, LiveView())
    assert decision.reasons[0] == "+78123090000 is the tenant's own number"
    assert decision.verbs[:2] == (Answer(), Play("welcome"))
