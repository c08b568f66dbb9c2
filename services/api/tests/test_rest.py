"""The REST API against a real PostgreSQL: resources, isolation, roles, concurrency, problems."""

from __future__ import annotations

import hashlib
import uuid

import asyncpg

from .conftest import PLATFORM_TOKEN, Api

RESOURCES = {
    "departments": {"name": "Sales"},
    "users": {"name": "Anna", "extension": "101"},
    "trunks": {
        "name": "carrier",
        "auth_mode": "ip",
        "host": "sip.example.net",
        "source_addresses": ["192.0.2.10"],
    },
    "numbers": {"e164": "+7 812 333-44-55"},
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_tenant_admin_manages_every_resource(api: Api) -> None:
    tenant_id, token = await api.tenant(unique("acme"))
    for kind, body in RESOURCES.items():
        status, created, headers = await api.call(
            "POST", f"/tenants/{tenant_id}/{kind}", token, body
        )
        assert status == 201, (kind, created)
        assert headers["ETag"] == '"1"'
        status, got, _ = await api.call(
            "GET", f"/tenants/{tenant_id}/{kind}/{created['id']}", token
        )
        assert status == 200 and got["id"] == created["id"]
        status, listed, _ = await api.call("GET", f"/tenants/{tenant_id}/{kind}", token)
        assert status == 200 and [item["id"] for item in listed["items"]] == [created["id"]]
        status, _, _ = await api.call(
            "DELETE", f"/tenants/{tenant_id}/{kind}/{created['id']}", token
        )
        assert status == 204
        status, problem, _ = await api.call(
            "GET", f"/tenants/{tenant_id}/{kind}/{created['id']}", token
        )
        assert status == 404 and problem["status"] == 404


async def test_number_is_normalised_to_e164(api: Api) -> None:
    tenant_id, token = await api.tenant(unique("norm"))
    status, number, _ = await api.call(
        "POST", f"/tenants/{tenant_id}/numbers", token, {"e164": "+7 (812) 333-44-56"}
    )
    assert status == 201 and number["e164"] == "+78123334456"


async def test_sip_password_is_shown_once_and_stored_as_ha1(
    api: Api, api_pool: asyncpg.Pool
) -> None:
    tenant_id, token = await api.tenant(unique("sip"))
    status, user, _ = await api.call(
        "POST", f"/tenants/{tenant_id}/users", token, {"name": "Boris", "extension": "102"}
    )
    assert status == 201
    creds = user["sip_credentials"]
    assert creds["username"] == "102" and len(creds["password"]) >= 16
    status, again, _ = await api.call("GET", f"/tenants/{tenant_id}/users/{user['id']}", token)
    assert "sip_credentials" not in again and "password" not in str(again).lower().replace(
        "sip_", ""
    )
    row = await api_pool.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(user["id"]))
    material = f"102:{creds['realm']}:{creds['password']}".encode()
    assert row["sip_ha1_md5"] == hashlib.md5(material).hexdigest()
    assert row["sip_ha1_sha256"] == hashlib.sha256(material).hexdigest()
    assert creds["password"] not in str(dict(row))


async def test_cross_tenant_access_is_not_found_for_every_resource(api: Api) -> None:
    tenant_a, token_a = await api.tenant(unique("a"))
    tenant_b, token_b = await api.tenant(unique("b"))
    for kind, body in RESOURCES.items():
        if kind == "numbers":
            body = {"e164": f"+7495{uuid.uuid4().int % 10**7:07d}"}
        status, theirs, _ = await api.call("POST", f"/tenants/{tenant_b}/{kind}", token_b, body)
        assert status == 201, theirs
        path = f"/tenants/{tenant_b}/{kind}/{theirs['id']}"
        for method, payload in (("GET", None), ("PATCH", {}), ("DELETE", None)):
            status, problem, _ = await api.call(method, path, token_a, payload)
            assert status == 404, (kind, method, problem)
            assert (
                theirs["id"] not in str(problem.get("detail", ""))
                or "not found" in problem["detail"]
            )
        # Listing or creating in the other tenant: the tenant itself is not found.
        assert (await api.call("GET", f"/tenants/{tenant_b}/{kind}", token_a))[0] == 404
        assert (await api.call("POST", f"/tenants/{tenant_b}/{kind}", token_a, body))[0] == 404
        # Putting tenant A's id in the path with B's resource id does not reach it either.
        status, _, _ = await api.call("GET", f"/tenants/{tenant_a}/{kind}/{theirs['id']}", token_a)
        assert status == 404
    assert (await api.call("GET", f"/tenants/{tenant_b}", token_a))[0] == 404
    status, listed, _ = await api.call("GET", "/tenants", token_a)
    assert [t["id"] for t in listed["items"]] == [tenant_a]


async def test_same_extension_in_two_tenants_but_not_twice_in_one(api: Api) -> None:
    tenant_a, token_a = await api.tenant(unique("x"))
    tenant_b, token_b = await api.tenant(unique("y"))
    body = {"name": "Same", "extension": "200"}
    assert (await api.call("POST", f"/tenants/{tenant_a}/users", token_a, body))[0] == 201
    assert (await api.call("POST", f"/tenants/{tenant_b}/users", token_b, body))[0] == 201
    status, problem, _ = await api.call("POST", f"/tenants/{tenant_a}/users", token_a, body)
    assert status == 409 and "extension" in problem["detail"]


async def test_optimistic_concurrency_with_etags(api: Api) -> None:
    tenant_id, token = await api.tenant(unique("etag"))
    _, user, headers = await api.call(
        "POST", f"/tenants/{tenant_id}/users", token, {"name": "Vera", "extension": "103"}
    )
    path = f"/tenants/{tenant_id}/users/{user['id']}"
    status, changed, headers = await api.call(
        "PATCH", path, token, {"name": "Vera K"}, **{"If-Match": '"1"'}
    )
    assert status == 200 and changed["version"] == 2 and headers["ETag"] == '"2"'
    # A second writer still holding version 1 loses, and learns the current version.
    status, problem, _ = await api.call(
        "PATCH", path, token, {"name": "Stale"}, **{"If-Match": '"1"'}
    )
    assert status == 412 and problem["current_version"] == 2
    status, _, _ = await api.call("DELETE", path, token, **{"If-Match": '"1"'})
    assert status == 412
    status, _, _ = await api.call("GET", path, token, **{"If-None-Match": '"2"'})
    assert status == 304
    status, problem, _ = await api.call(
        "PATCH", path, token, {"name": "x"}, **{"If-Match": "garbage"}
    )
    assert status == 400 and "If-Match" in problem["detail"]


async def test_bad_payloads_get_precise_problem_details(api: Api) -> None:
    tenant_id, token = await api.tenant(unique("bad"))
    users = f"/tenants/{tenant_id}/users"
    status, problem, headers = await api.call(
        "POST", users, token, {"name": "Z", "extension": "1x", "colour": "red"}
    )
    assert status == 422
    assert headers["Content-Type"].startswith("application/problem+json")
    pointers = {e["pointer"] for e in problem["errors"]}
    assert pointers == {"/extension", "/colour"}
    assert problem["type"].endswith("/problems/validation") and problem["request_id"]

    status, problem, _ = await api.call(
        "POST", f"/tenants/{tenant_id}/numbers", token, {"e164": "12345"}
    )
    assert status == 422 and "international" in problem["errors"][0]["detail"]

    status, problem, _ = await api.call(
        "POST",
        "/tenants",
        PLATFORM_TOKEN,
        {"slug": unique("tz"), "name": "T", "timezone": "Mars/Base"},
    )
    assert status == 422 and "Mars/Base" in problem["detail"]

    response = await api.http.post(
        f"/api/v1{users}",
        data=b"{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status == 400 and "not JSON" in (await response.json())["detail"]
    response = await api.http.post(
        f"/api/v1{users}",
        data=b"name=x",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
    )
    assert response.status == 415

    status, problem, _ = await api.call(
        "POST",
        f"/tenants/{tenant_id}/trunks",
        token,
        {"name": "t", "auth_mode": "ip", "host": "h.example"},
    )
    assert status == 422 and "source address" in problem["detail"]

    for limit in ("0", "501", "%C2%B2", "ten"):  # %C2%B2 is "²": a digit to isdigit()
        status, problem, _ = await api.call("GET", f"{users}?limit={limit}", token)
        assert status == 400 and "limit" in problem["detail"], limit
    status, problem, _ = await api.call("GET", f"{users}?colour=red", token)
    assert status == 400 and "colour" in problem["detail"]


async def test_authentication_and_roles(api: Api) -> None:
    tenant_id, admin = await api.tenant(unique("roles"))
    base = f"/tenants/{tenant_id}"
    assert (await api.call("GET", "/tenants", "cm_nonsense"))[0] == 401
    response = await api.http.get("/api/v1/tenants")
    assert response.status == 401

    _, sales, _ = await api.call("POST", f"{base}/departments", admin, {"name": "Sales"})
    _, support, _ = await api.call("POST", f"{base}/departments", admin, {"name": "Support"})
    _, anna, _ = await api.call(
        "POST",
        f"{base}/users",
        admin,
        {"name": "Anna", "extension": "101", "department_id": sales["id"]},
    )
    _, boris, _ = await api.call(
        "POST",
        f"{base}/users",
        admin,
        {"name": "Boris", "extension": "102", "department_id": support["id"]},
    )
    _, sveta, _ = await api.call(
        "POST",
        f"{base}/users",
        admin,
        {
            "name": "Sveta",
            "extension": "110",
            "role": "supervisor",
            "managed_departments": [sales["id"]],
        },
    )
    _, agent_token, _ = await api.call(
        "POST", f"{base}/tokens", admin, {"name": "anna", "role": "agent", "user_id": anna["id"]}
    )
    _, super_token, _ = await api.call(
        "POST",
        f"{base}/tokens",
        admin,
        {"name": "sveta", "role": "supervisor", "user_id": sveta["id"]},
    )

    # The agent sees only herself, cannot see wiring, and cannot change anything.
    _, listed, _ = await api.call("GET", f"{base}/users", agent_token["token"])
    assert [u["id"] for u in listed["items"]] == [anna["id"]]
    assert (await api.call("GET", f"{base}/users/{boris['id']}", agent_token["token"]))[0] == 404
    assert (await api.call("GET", f"{base}/trunks", agent_token["token"]))[0] == 403
    status, problem, _ = await api.call(
        "POST", f"{base}/users", agent_token["token"], {"name": "X", "extension": "150"}
    )
    assert status == 403 and "agent" in problem["detail"]

    # The supervisor sees the department they manage (and themselves), not the other one.
    _, listed, _ = await api.call("GET", f"{base}/users", super_token["token"])
    assert {u["id"] for u in listed["items"]} == {anna["id"], sveta["id"]}
    assert (await api.call("GET", f"{base}/users/{boris['id']}", super_token["token"]))[0] == 404
    assert (
        await api.call("PATCH", f"{base}/users/{anna['id']}", super_token["token"], {"name": "A"})
    )[0] == 403
    # Only a platform admin creates tenants.
    assert (await api.call("POST", "/tenants", admin, {"slug": unique("z"), "name": "Z"}))[0] == 403


async def test_login_gives_the_same_answer_for_unknown_user_and_wrong_password(api: Api) -> None:
    slug = unique("login")
    tenant_id, admin = await api.tenant(slug)
    await api.call(
        "POST",
        f"/tenants/{tenant_id}/users",
        admin,
        {
            "name": "Lena",
            "extension": "120",
            "email": "lena@example.com",
            "login_password": "correct horse battery",
            "role": "tenant_admin",
        },
    )
    ok = await api.http.post(
        "/api/v1/auth/login",
        json={"tenant": slug, "email": "LENA@example.com", "password": "correct horse battery"},
    )
    assert ok.status == 201
    token = (await ok.json())["token"]
    assert (await api.call("GET", f"/tenants/{tenant_id}/users", token))[0] == 200
    wrong = await api.http.post(
        "/api/v1/auth/login",
        json={"tenant": slug, "email": "lena@example.com", "password": "wrong password"},
    )
    unknown = await api.http.post(
        "/api/v1/auth/login",
        json={"tenant": slug, "email": "nobody@example.com", "password": "wrong password"},
    )
    assert wrong.status == unknown.status == 401
    assert (await wrong.json())["detail"] == (await unknown.json())["detail"]


async def test_changes_are_audited_and_queued_for_config_events(
    api: Api, api_pool: asyncpg.Pool
) -> None:
    tenant_id, token = await api.tenant(unique("audit"))
    _, user, _ = await api.call(
        "POST",
        f"/tenants/{tenant_id}/users",
        token,
        {"name": "Oleg", "extension": "130"},
        **{"X-Request-Id": "req-42"},
    )
    await api.call("PATCH", f"/tenants/{tenant_id}/users/{user['id']}", token, {"name": "Oleg P"})
    await api.call("DELETE", f"/tenants/{tenant_id}/users/{user['id']}", token)
    status, audit, _ = await api.call("GET", f"/tenants/{tenant_id}/audit", token)
    assert status == 200
    actions = [(e["action"], e["resource"]) for e in audit["items"] if e["resource"] == "user"]
    assert actions == [("delete", "user"), ("update", "user"), ("create", "user")]
    created = next(e for e in audit["items"] if e["resource"] == "user" and e["action"] == "create")
    assert created["request_id"] == "req-42"
    assert "<hidden>" in str(created["after"]) and "Oleg" in str(created["after"])
    outbox = await api_pool.fetch(
        "SELECT kind, version, deleted FROM config_outbox WHERE resource_id = $1 ORDER BY id",
        uuid.UUID(user["id"]),
    )
    assert [(r["kind"], r["version"], r["deleted"]) for r in outbox] == [
        ("user", 1, False),
        ("user", 2, False),
        ("user", 3, True),
    ]


async def test_list_pages_with_a_cursor(api: Api) -> None:
    tenant_id, token = await api.tenant(unique("page"))
    for ext in range(300, 307):
        await api.call(
            "POST", f"/tenants/{tenant_id}/users", token, {"name": f"U{ext}", "extension": str(ext)}
        )
    seen: list[str] = []
    cursor = ""
    while True:
        _, page, _ = await api.call(
            "GET", f"/tenants/{tenant_id}/users?limit=3&cursor={cursor}", token
        )
        seen += [u["extension"] for u in page["items"]]
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    assert seen == [str(e) for e in range(300, 307)]
    _, filtered, _ = await api.call("GET", f"/tenants/{tenant_id}/users?extension=30*", token)
    assert len(filtered["items"]) == 7
    _, exact, _ = await api.call("GET", f"/tenants/{tenant_id}/users?extension=304", token)
    assert [u["extension"] for u in exact["items"]] == ["304"]


async def test_openapi_document_and_docs_page(api: Api) -> None:
    response = await api.http.get("/api/v1/openapi.json")
    doc = await response.json()
    assert doc["openapi"] == "3.1.0"
    assert "/api/v1/tenants/{tenant_id}/users/{id}" in doc["paths"]
    for path_item in doc["paths"].values():
        for op in path_item.values():
            for ref in str(op).split("'$ref': '")[1:]:
                name = ref.split("'")[0].rsplit("/", 1)[-1]
                assert name in doc["components"]["schemas"], name
    page = await api.http.get("/api/v1/docs")
    assert page.status == 200 and "openapi.json" in await page.text()


async def test_rotating_a_sip_password_replaces_the_digest_secrets(
    api: Api, api_pool: asyncpg.Pool
) -> None:
    tenant_id, token = await api.tenant(unique("rotate"))
    _, user, _ = await api.call(
        "POST", f"/tenants/{tenant_id}/users", token, {"name": "Ivan", "extension": "140"}
    )
    old = user["sip_credentials"]["password"]
    status, creds, _ = await api.call(
        "POST", f"/tenants/{tenant_id}/users/{user['id']}/sip-password", token
    )
    assert status == 201 and creds["password"] != old and creds["username"] == "140"
    row = await api_pool.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(user["id"]))
    material = f"140:{creds['realm']}:{creds['password']}".encode()
    assert row["sip_ha1_sha256"] == hashlib.sha256(material).hexdigest()
    assert row["version"] == 2
