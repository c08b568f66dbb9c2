"""Reports over a fixture day, through the REST API on a real PostgreSQL.

The day (2026-11-20, tenant in Europe/Moscow): the seven kinds of call from the fold tests, then
call-backs (answered or not), repeat callers, and calls just inside and just outside the local
day. CDRs are the fold's output written directly (the Kafka path is tested in
test_cdr_pipeline.py), so every figure below is worked out by hand from the scripts.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import uuid
import zoneinfo
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from callmesh_api.cdr import fold_events, write_cdrs

from .conftest import Api
from .test_cdr_fold import (
    CALLER,
    OUT,
    OUTBOUND,
    Script,
    Users,
    answered_inbound,
    busy_inbound,
    cancelled_inbound,
    missed_inbound,
    outbound,
    queued_abandoned,
    queued_answered,
    seconds,
)

MSK = zoneinfo.ZoneInfo("Europe/Moscow")
DAY = "2026-11-20"


def local(hour: int, minute: int = 0, day: int = 20) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=MSK)


def outbound_unanswered(tenant: str, users: Users, start: dt.datetime, callee: str) -> Script:
    s = Script(tenant, start)
    s.add("a", 0, "attempt", direction=OUTBOUND, caller_number="102", caller_user_id=users.boris,
          callee_number=callee)  # fmt: skip
    s.add("b1", 0.2, "attempt", direction=OUTBOUND, callee_number=callee, parent_leg="a")
    s.end("b1", 30, OUT.CALL_OUTCOME_NO_ANSWER, CALLER, total_duration=seconds(29.8))
    s.end("a", 30, OUT.CALL_OUTCOME_NO_ANSWER, CALLER, total_duration=seconds(30),
          ring_duration=seconds(30))  # fmt: skip
    return s


@dataclass
class Day:
    tenant_id: str
    admin: str
    anna_token: str
    support_supervisor: str
    sales_id: str
    support_id: str
    calls: dict[str, str]  # label -> call id


@pytest.fixture(scope="module")
async def day(api: Api, api_pool: asyncpg.Pool) -> Day:
    tenant_id, admin = await api.tenant(f"rep-{uuid.uuid4().hex[:8]}")
    path = f"/tenants/{tenant_id}"
    assert (await api.call("PATCH", path, admin, {"timezone": "Europe/Moscow"}))[0] == 200

    async def post(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        status, created, _ = await api.call("POST", f"{path}/{kind}", admin, body)
        assert status == 201, created
        return created

    sales = await post("departments", {"name": "Sales"})
    support = await post("departments", {"name": "Support"})
    anna = await post("users", {"name": "Anna", "extension": "101", "department_id": sales["id"]})
    boris = await post("users", {"name": "Boris", "extension": "102", "department_id": sales["id"]})
    vera = await post("users", {"name": "Vera", "extension": "103", "department_id": support["id"]})
    head = await post(
        "users",
        {
            "name": "Head",
            "extension": "110",
            "role": "supervisor",
            "managed_departments": [support["id"]],
        },
    )
    anna_token = await post("tokens", {"name": "anna", "role": "agent", "user_id": anna["id"]})
    head_token = await post("tokens", {"name": "head", "role": "supervisor", "user_id": head["id"]})
    users = Users(anna["id"], boris["id"], vera["id"])
    t = tenant_id
    scripts = {
        "answered": answered_inbound(t, users, local(9, 0), "+78121234567"),
        "missed": missed_inbound(t, users, local(9, 1), "+78122222222"),
        "busy": busy_inbound(t, users, local(9, 2), "+74953333333"),
        "cancelled": cancelled_inbound(t, users, local(9, 3), "+79114444444"),
        "outbound": outbound(t, users, local(9, 4), "84955555555", talk=120),
        "queued": queued_answered(t, users, local(9, 5), "+78126666666"),
        "abandoned": queued_abandoned(t, users, local(9, 6), "+78127777777"),
        # Boris calls the busy caller back (answered), the cancelled one (no answer).
        "callback": outbound(t, users, local(11), "+74953333333", talk=30),
        "callback_unanswered": outbound_unanswered(t, users, local(12), "89114444444"),
        # The missed caller gets through at 12:30 but misses again at 14:00.
        "through": answered_inbound(t, users, local(12, 30), "+78122222222"),
        # The abandoned caller calls again and Anna answers.
        "again": answered_inbound(t, users, local(13), "+78127777777"),
        "missed_again": missed_inbound(t, users, local(14), "+78122222222"),
        "late": missed_inbound(t, users, local(23, 30), "+78128888888"),
        # Outside the local day (the second one is still 20 November in UTC).
        "day_before": missed_inbound(t, users, local(20, 0, day=19), "+78129999999"),
        "day_after": missed_inbound(t, users, local(1, 0, day=21), "+78121111111"),
    }
    cdrs = fold_events([e for s in scripts.values() for e in s.events], region="RU")
    async with api_pool.acquire() as conn:
        await write_cdrs(conn, cdrs)
    return Day(
        tenant_id,
        admin,
        anna_token["token"],
        head_token["token"],
        sales["id"],
        support["id"],
        {label: s.call_id for label, s in scripts.items()},
    )


IN_DAY = {
    "answered", "missed", "busy", "cancelled", "outbound", "queued", "abandoned", "callback",
    "callback_unanswered", "through", "again", "missed_again", "late",
}  # fmt: skip


async def get(api: Api, day: Day, path: str, token: str | None = None, **query: Any) -> Any:
    params = "&".join(f"{k}={v}" for k, v in {"from": DAY, **query}.items())
    status, body, _ = await api.call(
        "GET", f"/tenants/{day.tenant_id}/{path}?{params}", token or day.admin
    )
    assert status == 200, body
    return body


async def call_labels(api: Api, day: Day, token: str | None = None, **query: Any) -> set[str]:
    by_id = {v: k for k, v in day.calls.items()}
    labels: list[str] = []
    cursor = None
    while True:
        extra = {**query, **({"cursor": cursor} if cursor else {})}
        page = await get(api, day, "calls", token, limit=5, **extra)
        labels += [by_id[item["call_id"]] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(labels) == len(set(labels)), "a call appeared on two pages"
    return set(labels)


async def test_call_list_covers_the_local_day_newest_first(api: Api, day: Day) -> None:
    assert await call_labels(api, day) == IN_DAY
    page = await get(api, day, "calls", limit=3)
    assert [i["call_id"] for i in page["items"]] == [
        day.calls["late"],
        day.calls["missed_again"],
        day.calls["again"],
    ]
    late = page["items"][0]
    assert late["started_at"] == "2026-11-20T23:30:00+03:00"  # in the tenant's zone
    assert late["outcome"] == "no_answer" and late["rang_extensions"] == ["101", "102"]


async def test_call_list_filters(api: Api, day: Day) -> None:
    missed = {"missed", "busy", "cancelled", "abandoned", "missed_again", "late"}
    assert await call_labels(api, day, outcome="missed", direction="inbound") == missed
    assert await call_labels(api, day, outcome="busy") == {"busy"}
    assert await call_labels(api, day, direction="outbound") == {
        "outbound", "callback", "callback_unanswered",
    }  # fmt: skip
    anna = {"answered", "missed", "cancelled", "through", "again", "missed_again", "late"}
    assert await call_labels(api, day, extension="101") == anna
    assert await call_labels(api, day, extension="102") == {
        "missed", "busy", "outbound", "callback", "callback_unanswered", "missed_again", "late",
    }  # fmt: skip
    assert await call_labels(api, day, department_id=day.support_id) == {"queued"}
    spb = {"answered", "missed", "queued", "abandoned", "through", "again", "missed_again", "late"}
    assert await call_labels(api, day, caller_prefix="812") == spb
    assert await call_labels(api, day, caller_prefix="%2B7812") == spb
    assert await call_labels(api, day, caller_prefix="495") == {"busy"}
    assert await call_labels(api, day, min_duration=100) == {"outbound"}
    assert await call_labels(api, day, min_duration=60, max_duration=61) == {
        "answered", "through", "again",
    }  # fmt: skip
    unanswered = {"missed", "busy", "cancelled", "abandoned", "callback_unanswered"}
    assert await call_labels(api, day, max_duration=0) == unanswered | {"missed_again", "late"}
    assert await call_labels(api, day, to="2026-11-20T10:00:00") == {
        "answered", "missed", "busy", "cancelled", "outbound", "queued", "abandoned",
    }  # fmt: skip


async def test_call_detail_fields(api: Api, day: Day) -> None:
    page = await get(api, day, "calls", outcome="answered", direction="outbound", limit=1)
    (item,) = page["items"]
    assert item["call_id"] == day.calls["callback"]
    assert item["caller_extension"] == "102" and item["callee_number"] == "+74953333333"
    assert item["talk_seconds"] == 30 and item["ring_seconds"] == 9
    assert item["post_dial_delay_ms"] == 2200
    queued = await get(api, day, "calls", department_id=day.support_id)
    assert queued["items"][0]["queue_id"] == "support"
    assert queued["items"][0]["queue_wait_seconds"] == 20


async def test_missed_not_called_back(api: Api, day: Day) -> None:
    body = await get(api, day, "reports/missed")
    rows = [(r["number"], r["missed_calls"], r["last_missed_at"]) for r in body["items"]]
    assert rows == [
        ("+78128888888", 1, "2026-11-20T23:30:00+03:00"),
        ("+78122222222", 2, "2026-11-20T14:00:00+03:00"),
        ("+79114444444", 1, "2026-11-20T09:03:00+03:00"),
    ]
    assert body["items"][1]["last_call_id"] == day.calls["missed_again"]
    assert body["items"][1]["first_missed_at"] == "2026-11-20T09:01:00+03:00"
    # Paging through one at a time gives the same rows.
    first = await get(api, day, "reports/missed", limit=1)
    second = await get(api, day, "reports/missed", limit=1, cursor=first["next_cursor"])
    assert [first["items"][0]["number"], second["items"][0]["number"]] == [
        "+78128888888", "+78122222222",
    ]  # fmt: skip
    # Before the call-back at 11:00 the busy caller was still waiting for one.
    morning = await get(api, day, "reports/missed", to="2026-11-20T10:00:00")
    assert {r["number"] for r in morning["items"]} == {"+79114444444"}


async def test_employee_and_department_load(api: Api, day: Day) -> None:
    body = await get(api, day, "reports/employees")
    load = {r["extension"]: r for r in body["items"]}
    assert body["period_from"] == "2026-11-20T00:00:00+03:00"
    assert set(load) == {"101", "102", "103", "110"}
    anna, boris, vera = load["101"], load["102"], load["103"]
    assert (anna["calls"], anna["answered"], anna["missed"]) == (7, 3, 4)
    assert anna["talk_seconds"] == pytest.approx(180.3)
    assert anna["average_talk_seconds"] == pytest.approx(60.1)
    assert (boris["calls"], boris["answered"], boris["missed"], boris["outbound"]) == (7, 2, 4, 3)
    assert boris["talk_seconds"] == pytest.approx(150)
    assert (vera["calls"], vera["answered"], vera["talk_seconds"]) == (1, 1, 90)
    assert load["110"]["calls"] == 0 and load["110"]["average_talk_seconds"] is None

    body = await get(api, day, "reports/departments")
    by_name = {r["name"]: r for r in body["items"]}
    sales = by_name["Sales"]
    assert (sales["calls"], sales["answered"], sales["missed"]) == (11, 5, 5)
    assert sales["talk_seconds"] == pytest.approx(330.3)
    assert (by_name["Support"]["calls"], by_name["Support"]["talk_seconds"]) == (1, 90)


async def test_hourly_load_in_local_hours(api: Api, day: Day) -> None:
    body = await get(api, day, "reports/hourly")
    hours = {r["hour"]: (r["calls"], r["answered"], r["missed"]) for r in body["items"]}
    assert len(body["items"]) == 24
    assert hours[9] == (7, 3, 4)
    assert {h: v for h, v in hours.items() if h != 9 and v[0]} == {
        11: (1, 1, 0),
        12: (2, 1, 0),
        13: (1, 1, 0),
        14: (1, 0, 1),
        23: (1, 0, 1),
    }


async def test_asr_acd_ner(api: Api, day: Day) -> None:
    stats = await get(api, day, "reports/stats")
    assert stats["attempts"] == 13
    assert (stats["answered"], stats["no_answer"], stats["busy"]) == (6, 4, 1)
    assert (stats["cancelled"], stats["abandoned"], stats["rejected"], stats["failed"]) == (
        1, 1, 0, 0,
    )  # fmt: skip
    assert stats["asr"] == pytest.approx(6 / 13)
    assert stats["ner"] == pytest.approx(11 / 13)
    assert stats["acd_seconds"] == pytest.approx((60.1 * 3 + 120 + 90 + 30) / 6)
    inbound = await get(api, day, "reports/stats", direction="inbound")
    assert (inbound["attempts"], inbound["answered"]) == (10, 4)


async def test_agent_sees_only_own_calls(api: Api, day: Day) -> None:
    anna = {"answered", "missed", "cancelled", "through", "again", "missed_again", "late"}
    assert await call_labels(api, day, day.anna_token) == anna
    employees = await get(api, day, "reports/employees", day.anna_token)
    assert [r["extension"] for r in employees["items"]] == ["101"]
    stats = await get(api, day, "reports/stats", day.anna_token)
    assert stats["attempts"] == 7


async def test_supervisor_sees_their_departments(api: Api, day: Day) -> None:
    head = day.support_supervisor
    assert await call_labels(api, day, head) == {"queued"}
    employees = await get(api, day, "reports/employees", head)
    assert {r["extension"] for r in employees["items"]} == {"103", "110"}
    departments = await get(api, day, "reports/departments", head)
    assert [r["name"] for r in departments["items"]] == ["Support"]
    assert (await get(api, day, "reports/missed", head))["items"] == []


async def test_other_tenants_reports_are_not_found(api: Api, day: Day) -> None:
    _, stranger = await api.tenant(f"other-{uuid.uuid4().hex[:8]}")
    for path in (
        "calls",
        "calls.csv",
        "reports/missed",
        "reports/employees",
        "reports/departments",
        "reports/queues",
        "reports/hourly",
        "reports/stats",
    ):
        for token in (stranger, day.anna_token):
            url = f"/tenants/{uuid.uuid4() if token == day.anna_token else day.tenant_id}/{path}"
            status, problem, _ = await api.call("GET", url, token)
            assert status == 404, (path, problem)
            assert problem["type"].endswith("/not-found")


async def test_bad_report_queries_are_precise_problems(api: Api, day: Day) -> None:
    base = f"/tenants/{day.tenant_id}"
    for query, words in (
        ("calls?from=yesterday", "from must be a date"),
        ("calls?from=2026-11-20&to=2026-11-19", "to must be after from"),
        ("calls?outcome=maybe", "outcome is missed"),
        ("calls?colour=red", "unknown query parameter"),
        ("reports/hourly?colour=red", "unknown query parameter"),
        ("reports/stats?caller_prefix=abc", "caller_prefix"),
        ("reports/employees?outcome=busy", "unknown query parameter"),
        ("calls?from=2020-01-01&to=2026-01-01", "at most 400 days"),
    ):
        status, problem, _ = await api.call("GET", f"{base}/{query}", day.admin)
        assert status == 400 and words in problem["detail"], (query, problem)
        assert problem["type"].endswith("/bad-query")
    status, _, _ = await api.call("GET", f"{base}/calls?limit=0", day.admin)
    assert status == 400
    status, problem, _ = await api.call("GET", f"{base}/calls?cursor=zzz", day.admin)
    assert status == 400


async def test_csv_export_streams_the_day(api: Api, day: Day) -> None:
    response = await api.http.get(
        f"/api/v1/tenants/{day.tenant_id}/calls.csv?from={DAY}",
        headers={"Authorization": f"Bearer {day.admin}"},
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.headers.get("Transfer-Encoding") == "chunked"
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert len(rows) == len(IN_DAY)
    assert [r["call_id"] for r in rows][:2] == [day.calls["answered"], day.calls["missed"]]
    first = rows[0]
    assert first["outcome"] == "answered" and first["caller_number"] == "+78121234567"
    assert first["talk_seconds"] == "60.1" and first["rang_extensions"] == "101"
    assert first["started_at"] == "2026-11-20T09:00:00+03:00"
    assert rows[1]["answered_at"] == "" and rows[1]["rang_extensions"] == "101 102"
    # Filters apply to the export as to the list; an agent exports only their calls.
    agent = await api.http.get(
        f"/api/v1/tenants/{day.tenant_id}/calls.csv?from={DAY}&outcome=missed",
        headers={"Authorization": f"Bearer {day.anna_token}"},
    )
    agent_rows = list(csv.DictReader(io.StringIO(await agent.text())))
    assert {r["call_id"] for r in agent_rows} == {
        day.calls[k] for k in ("missed", "cancelled", "missed_again", "late")
    }
    # A department that does not exist is a problem response, not a broken stream.
    status, problem, _ = await api.call(
        "GET", f"/tenants/{day.tenant_id}/calls.csv?department_id={uuid.uuid4()}", day.admin
    )
    assert status == 404 and problem["type"].endswith("/not-found")


async def test_openapi_documents_the_reports(api: Api) -> None:
    response = await api.http.get("/api/v1/openapi.json")
    document = await response.json()
    calls = document["paths"]["/api/v1/tenants/{tenant_id}/calls"]["get"]
    names = {p["name"] for p in calls["parameters"]}
    assert {"from", "to", "outcome", "caller_prefix", "limit", "cursor"} <= names
    stats = document["paths"]["/api/v1/tenants/{tenant_id}/reports/stats"]["get"]
    assert stats["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CallStats"
    }
    export = document["paths"]["/api/v1/tenants/{tenant_id}/calls.csv"]["get"]
    assert list(export["responses"]["200"]["content"]) == ["text/csv"]


async def test_hostile_query_values_are_problems_not_errors(api: Api, day: Day) -> None:
    base = f"/tenants/{day.tenant_id}"
    forged = base64.urlsafe_b64encode(json.dumps([5, 7]).encode()).decode()
    far = base64.urlsafe_b64encode(json.dumps(["0001-01-01T00:00:00", "x"]).encode()).decode()
    for query in (
        "calls?min_duration=%C2%B2",  # "²" is a digit to str.isdigit
        "calls?extension=%C2%B2%C2%B3",
        "calls?from=0001-01-01",
        "calls?from=0001-01-01T00:00:00%2B14:00",
        f"calls?cursor={forged}",
        f"reports/missed?cursor={far}",
    ):
        status, problem, _ = await api.call("GET", f"{base}/{query}", day.admin)
        assert status == 400, (query, problem)


async def test_queue_service_level(api: Api, day: Day) -> None:
    body = await get(api, day, "reports/queues")
    (support,) = body["items"]
    assert support["queue_id"] == "support"
    assert (support["waited"], support["answered"], support["abandoned"]) == (2, 1, 1)
    assert support["service_level"] == 0.5 and support["service_level_seconds"] == 20
    assert support["average_wait_seconds"] == pytest.approx(32.5)
    assert support["longest_wait_seconds"] == 45
    status, problem, _ = await api.call(
        "GET", f"/tenants/{day.tenant_id}/reports/queues", day.support_supervisor
    )
    assert status == 403 and problem["type"].endswith("/forbidden")
