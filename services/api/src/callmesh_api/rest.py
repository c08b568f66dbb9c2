"""The REST API under /api/v1: routes, auth, RFC 9457 problem details, ETags, OpenAPI 3.1.

Each operation is declared once in `OPERATIONS` (method, path, models, roles in prose); that one
table registers the aiohttp routes and produces the OpenAPI document, so the document cannot
drift from what the server does.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from callmesh_core.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from .config_service import TENANT_RESOURCES, ConfigRejected, ConfigService, Unauthenticated
from .domain import models
from .domain.roles import Principal, Role
from .reports import (
    CALL_FILTERS,
    CSV_FIELDS,
    BadQuery,
    CallFilter,
    ReportService,
    Scope,
    parse_call_filter,
    period,
)
from .store import BadCursor

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 1 << 20
DEFAULT_LIMIT = 50
MAX_LIMIT = 500

Handler = Callable[["Call"], Awaitable[web.StreamResponse]]
REQUEST_ID_KEY = web.RequestKey("request_id", str)


# -- problem details (RFC 9457) --------------------------------------------------------------
class Problem(Exception):
    def __init__(self, status: int, slug: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail, self.extra = (
            status,
            slug,
            title,
            detail,
            extra,
        )

    def response(self, request: web.Request) -> web.Response:
        body = {
            "type": f"{API}/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": request.path,
            "request_id": request.get(REQUEST_ID_KEY),
            **self.extra,
        }
        return web.json_response(body, status=self.status, content_type=PROBLEM_JSON)


_DOMAIN_PROBLEMS: list[tuple[type[DomainError], int, str, str]] = [
    (BadCursor, 400, "bad-query", "Bad query"),
    (BadQuery, 400, "bad-query", "Bad query"),
    (Unauthenticated, 401, "unauthenticated", "Not authenticated"),
    (NotFound, 404, "not-found", "Not found"),
    (PermissionDenied, 403, "forbidden", "Forbidden"),
    (AlreadyExists, 409, "conflict", "Already exists"),
    (Aborted, 412, "version-mismatch", "The resource has changed"),
    (FailedPrecondition, 409, "failed-precondition", "Not possible in the current state"),
    (InvalidArgument, 422, "invalid", "Invalid request"),
    (Unavailable, 503, "unavailable", "Temporarily unavailable"),
]


def problem_from_domain(error: DomainError) -> Problem:
    if isinstance(error, ConfigRejected):
        errors = [
            {
                "pointer": "/document/" + p.path.replace("~", "~0").replace("/", "~1"),
                "detail": p.message,
            }
            for p in error.problems
        ]
        return Problem(
            422,
            "invalid-routing-config",
            "Invalid routing configuration",
            error.message,
            errors=errors,
        )
    for kind, status, slug, title in _DOMAIN_PROBLEMS:
        if isinstance(error, kind):
            extra = {"current_version": error.current} if hasattr(error, "current") else {}
            return Problem(status, slug, title, error.message, **extra)
    return Problem(500, "internal", "Internal error", "the server could not finish the request")


def _pointer(loc: tuple[int | str, ...]) -> str:
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in loc)


def problem_from_validation(error: ValidationError) -> Problem:
    errors = [
        {"pointer": _pointer(tuple(e["loc"])), "detail": _message(e)}
        for e in error.errors(include_url=False)
    ]
    detail = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors)
    return Problem(422, "validation", "The request body is not valid", detail, errors=errors)


def _message(error: Any) -> str:
    ctx = error.get("ctx") or {}
    if error["type"] == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return str(error["msg"])


# -- one request ------------------------------------------------------------------------------
@dataclass
class Call:
    request: web.Request
    principal: Principal
    service: ConfigService

    @property
    def request_id(self) -> str | None:
        return self.request.get(REQUEST_ID_KEY)

    def path_id(self, name: str) -> uuid.UUID:
        raw = self.request.match_info[name]
        try:
            return uuid.UUID(raw)
        except ValueError:
            raise Problem(404, "not-found", "Not found", f"{raw!r} is not an id") from None

    async def body(self, model: type[BaseModel]) -> Any:
        if self.request.content_type != "application/json":
            raise Problem(
                415,
                "unsupported-media-type",
                "Unsupported media type",
                f"send the body as application/json, not {self.request.content_type!r}",
            )
        raw = await self.request.read()
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Problem(
                400, "malformed-json", "Malformed JSON", f"body is not JSON: {exc}"
            ) from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise problem_from_validation(exc) from None

    def page(self) -> tuple[int, str | None, dict[str, str]]:
        query = dict(self.request.query)
        if any("\x00" in key or "\x00" in value for key, value in query.items()):
            raise Problem(400, "bad-query", "Bad query", "query must not contain NUL characters")
        raw_limit = query.pop("limit", str(DEFAULT_LIMIT))
        # isdigit() alone accepts "²", which int() refuses.
        valid = raw_limit.isascii() and raw_limit.isdigit()
        if not valid or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise Problem(400, "bad-query", "Bad query", f"limit must be an integer 1..{MAX_LIMIT}")
        cursor = query.pop("cursor", None) or None
        return int(raw_limit), cursor, query

    def if_match(self) -> int | None:
        header = self.request.headers.get("If-Match")
        if header is None or header.strip() == "*":
            return None
        match = re.fullmatch(r'\s*(?:W/)?"(\d+)"\s*', header)
        if not match:
            raise Problem(
                400, "bad-if-match", "Bad If-Match", 'If-Match must be an ETag such as "3"'
            )
        return int(match.group(1))


def etag(version: int) -> str:
    return f'"{version}"'


def resource_response(
    call: Call, model: type[BaseModel], row: dict[str, Any], status: int = 200
) -> web.Response:
    body = model.model_validate(row).model_dump(mode="json")
    tag = etag(int(row["version"]))
    if status == 200 and tag in call.request.headers.getall("If-None-Match", []):
        return web.Response(status=304, headers={"ETag": tag})
    return web.json_response(body, status=status, headers={"ETag": tag})


def list_response(
    model: type[BaseModel], rows: list[dict[str, Any]], next_cursor: str | None
) -> web.Response:
    items = [model.model_validate(r).model_dump(mode="json") for r in rows]
    return web.json_response({"items": items, "next_cursor": next_cursor})


# -- operations -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    handler: Handler
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    is_list: bool = False
    public: bool = False
    filters: tuple[str, ...] = ()
    errors: tuple[int, ...] = field(default=(400, 401, 403, 404))
    media_type: str = "application/json"  # of a success without a response model


RESOURCES: dict[str, tuple[str, type[BaseModel], type[BaseModel], type[BaseModel]]] = {
    # kind: (tag, create, update, read)
    "departments": (
        "departments",
        models.DepartmentCreate,
        models.DepartmentUpdate,
        models.Department,
    ),
    "users": ("users", models.UserCreate, models.UserUpdate, models.User),
    "trunks": ("trunks", models.TrunkCreate, models.TrunkUpdate, models.Trunk),
    "numbers": ("numbers", models.NumberCreate, models.NumberUpdate, models.Number),
}
CREATED_MODEL: dict[str, type[BaseModel]] = {"users": models.UserCreated}


async def _list_tenants(call: Call) -> web.StreamResponse:
    limit, cursor, filters = call.page()
    rows, nxt = await call.service.list_tenants(
        call.principal, limit=limit, cursor=cursor, filters=filters
    )
    return list_response(models.Tenant, rows, nxt)


async def _create_tenant(call: Call) -> web.StreamResponse:
    body = await call.body(models.TenantCreate)
    row = await call.service.create_tenant(call.principal, body, call.request_id)
    return resource_response(call, models.Tenant, row, status=201)


async def _get_tenant(call: Call) -> web.StreamResponse:
    row = await call.service.tenant(call.principal, call.path_id("tenant_id"))
    return resource_response(call, models.Tenant, row)


async def _update_tenant(call: Call) -> web.StreamResponse:
    tenant_id = call.path_id("tenant_id")
    body = await call.body(models.TenantUpdate)
    row = await call.service.update_tenant(
        call.principal, tenant_id, body, call.if_match(), call.request_id
    )
    return resource_response(call, models.Tenant, row)


async def _delete_tenant(call: Call) -> web.StreamResponse:
    await call.service.delete_tenant(
        call.principal, call.path_id("tenant_id"), call.if_match(), call.request_id
    )
    return web.Response(status=204)


async def _create_token(call: Call) -> web.StreamResponse:
    tenant_id = call.path_id("tenant_id")
    body = await call.body(models.TokenCreate)
    created = await call.service.create_token(call.principal, tenant_id, body)
    return web.json_response(created.model_dump(mode="json"), status=201)


async def _get_routing_config(call: Call) -> web.StreamResponse:
    row = await call.service.get_routing_config(call.principal, call.path_id("tenant_id"))
    return resource_response(call, models.RoutingConfig, row)


async def _put_routing_config(call: Call) -> web.StreamResponse:
    tenant_id = call.path_id("tenant_id")
    body = await call.body(models.RoutingConfigPut)
    row = await call.service.put_routing_config(
        call.principal, tenant_id, body.document, call.if_match(), call.request_id
    )
    return resource_response(call, models.RoutingConfig, row)


async def _rotate_sip_password(call: Call) -> web.StreamResponse:
    credentials = await call.service.rotate_sip_password(
        call.principal, call.path_id("tenant_id"), call.path_id("id"), call.request_id
    )
    return web.json_response(credentials.model_dump(mode="json"), status=201)


async def _audit(call: Call) -> web.StreamResponse:
    limit, _, _ = call.page()
    rows = await call.service.audit(call.principal, call.path_id("tenant_id"), limit=limit)
    return web.json_response({"items": rows, "next_cursor": None}, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _filters(kind: str) -> tuple[str, ...]:
    table = TENANT_RESOURCES[kind]
    return tuple(dict.fromkeys((*table.filters, *table.prefix_filters)))


def _resource_ops(kind: str) -> list[Operation]:
    tag, create, update, read = RESOURCES[kind]
    created = CREATED_MODEL.get(kind, read)
    base = f"{API}/tenants/{{tenant_id}}/{kind}"

    async def list_(call: Call) -> web.StreamResponse:
        limit, cursor, filters = call.page()
        rows, nxt = await call.service.list_resources(
            call.principal,
            kind,
            call.path_id("tenant_id"),
            limit=limit,
            cursor=cursor,
            filters=filters,
        )
        return list_response(read, rows, nxt)

    async def create_(call: Call) -> web.StreamResponse:
        tenant_id = call.path_id("tenant_id")
        body = await call.body(create)
        row = await call.service.create_resource(
            call.principal, kind, tenant_id, body, call.request_id
        )
        return resource_response(call, created, row, status=201)

    async def get_(call: Call) -> web.StreamResponse:
        row = await call.service.get_resource(
            call.principal, kind, call.path_id("tenant_id"), call.path_id("id")
        )
        return resource_response(call, read, row)

    async def update_(call: Call) -> web.StreamResponse:
        tenant_id, row_id = call.path_id("tenant_id"), call.path_id("id")
        body = await call.body(update)
        row = await call.service.update_resource(
            call.principal, kind, tenant_id, row_id, body, call.if_match(), call.request_id
        )
        return resource_response(call, read, row)

    async def delete_(call: Call) -> web.StreamResponse:
        await call.service.delete_resource(
            call.principal,
            kind,
            call.path_id("tenant_id"),
            call.path_id("id"),
            call.if_match(),
            call.request_id,
        )
        return web.Response(status=204)

    singular = kind[:-1]
    return [
        Operation(
            "GET",
            base,
            f"List {kind}",
            tag,
            list_,
            response=read,
            is_list=True,
            filters=_filters(kind),
        ),
        Operation(
            "POST",
            base,
            f"Create a {singular}",
            tag,
            create_,
            body=create,
            response=created,
            status=201,
            errors=(400, 401, 403, 404, 409, 415, 422),
        ),
        Operation("GET", f"{base}/{{id}}", f"Get a {singular}", tag, get_, response=read),
        Operation(
            "PATCH",
            f"{base}/{{id}}",
            f"Change a {singular}",
            tag,
            update_,
            body=update,
            response=read,
            errors=(400, 401, 403, 404, 409, 412, 415, 422),
        ),
        Operation(
            "DELETE",
            f"{base}/{{id}}",
            f"Delete a {singular}",
            tag,
            delete_,
            status=204,
            errors=(400, 401, 403, 404, 412),
        ),
    ]


async def _login(call: Call) -> web.StreamResponse:
    body = await call.body(models.Login)
    created = await call.service.login(body)
    return web.json_response(created.model_dump(mode="json"), status=201)


OPERATIONS: list[Operation] = [
    Operation(
        "POST",
        f"{API}/auth/login",
        "Log in to the cabinet; returns a session token",
        "auth",
        _login,
        body=models.Login,
        response=models.TokenCreated,
        status=201,
        public=True,
        errors=(400, 401, 415, 422),
    ),
    Operation(
        "GET",
        f"{API}/tenants",
        "List tenants (a tenant's users see only their own)",
        "tenants",
        _list_tenants,
        response=models.Tenant,
        is_list=True,
        filters=("slug", "sip_domain"),
    ),
    Operation(
        "POST",
        f"{API}/tenants",
        "Create a tenant (platform admin)",
        "tenants",
        _create_tenant,
        body=models.TenantCreate,
        response=models.Tenant,
        status=201,
        errors=(400, 401, 403, 409, 415, 422),
    ),
    Operation(
        "GET",
        f"{API}/tenants/{{tenant_id}}",
        "Get a tenant",
        "tenants",
        _get_tenant,
        response=models.Tenant,
    ),
    Operation(
        "PATCH",
        f"{API}/tenants/{{tenant_id}}",
        "Change a tenant",
        "tenants",
        _update_tenant,
        body=models.TenantUpdate,
        response=models.Tenant,
        errors=(400, 401, 403, 404, 409, 412, 415, 422),
    ),
    Operation(
        "DELETE",
        f"{API}/tenants/{{tenant_id}}",
        "Delete a tenant and all it owns",
        "tenants",
        _delete_tenant,
        status=204,
        errors=(400, 401, 403, 404, 412),
    ),
    Operation(
        "POST",
        f"{API}/tenants/{{tenant_id}}/tokens",
        "Create an API token (shown once)",
        "auth",
        _create_token,
        body=models.TokenCreate,
        response=models.TokenCreated,
        status=201,
        errors=(400, 401, 403, 404, 415, 422),
    ),
    Operation(
        "GET",
        f"{API}/tenants/{{tenant_id}}/routing-config",
        "The tenant's routing configuration (scenarios and what they refer to)",
        "routing",
        _get_routing_config,
        response=models.RoutingConfig,
    ),
    Operation(
        "PUT",
        f"{API}/tenants/{{tenant_id}}/routing-config",
        "Replace the routing configuration; routing validates it and every problem is listed",
        "routing",
        _put_routing_config,
        body=models.RoutingConfigPut,
        response=models.RoutingConfig,
        errors=(400, 401, 403, 404, 412, 415, 422, 503),
    ),
    Operation(
        "POST",
        f"{API}/tenants/{{tenant_id}}/users/{{id}}/sip-password",
        "Give a user a new SIP password (shown once; the old one stops working)",
        "users",
        _rotate_sip_password,
        response=models.SipCredentials,
        status=201,
        errors=(400, 401, 403, 404),
    ),
    Operation(
        "GET",
        f"{API}/tenants/{{tenant_id}}/audit",
        "Configuration changes, newest first",
        "audit",
        _audit,
        is_list=True,
    ),
]
for _kind in RESOURCES:
    OPERATIONS.extend(_resource_ops(_kind))


# -- CDRs and reports (reports.py) ------------------------------------------------------------
MISSED_FILTERS = ("from", "to", "extension", "department_id", "caller_prefix")
LOAD_FILTERS = ("from", "to", "direction", "department_id")
FILTER_DOCS = {
    "from": "start: a date (local midnight of the tenant's time zone) or a date-time",
    "to": "end (exclusive); a date includes that whole day; default: end of the `from` day",
    "direction": "inbound, outbound or internal",
    "outcome": "answered, missed (every unanswered outcome), no_answer, busy, cancelled, "
    "rejected, failed, abandoned or in_progress",
    "extension": "calls that rang, were answered at or placed from this extension",
    "department_id": "calls touching a user of this department",
    "caller_prefix": "812 matches the national number after any country code; +7812 the "
    "number as presented",
    "min_duration": "talk time at least this many seconds",
    "max_duration": "talk time at most this many seconds",
}
CSV_CHUNK_BYTES = 64 * 1024


async def _report_scope(
    call: Call, query: dict[str, str], allowed: tuple[str, ...]
) -> tuple[ReportService, Scope, CallFilter]:
    reports = ReportService(call.service)
    scope = await reports.scope(call.principal, call.path_id("tenant_id"))
    flt = parse_call_filter(query, scope.timezone, dt.datetime.now(dt.UTC), allowed=allowed)
    return reports, scope, flt


async def _calls(call: Call) -> web.StreamResponse:
    limit, cursor, query = call.page()
    reports, scope, flt = await _report_scope(call, query, CALL_FILTERS)
    rows, nxt = await reports.calls(scope, flt, limit=limit, cursor=cursor)
    return list_response(models.CallDetail, rows, nxt)


async def _calls_csv(call: Call) -> web.StreamResponse:
    """The call list as CSV, streamed: rows come from a server-side cursor in chunks, so a
    year of calls never sits in memory."""
    reports, scope, flt = await _report_scope(call, dict(call.request.query), CALL_FILTERS)
    rows = await reports.calls_csv(scope, flt)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="calls.csv"',
            "X-Request-Id": call.request_id or "",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(call.request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    async for row in rows:
        writer.writerow(_csv_cell(value) for value in row)
        if buffer.tell() >= CSV_CHUNK_BYTES:
            await response.write(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
    await response.write(buffer.getvalue().encode())
    await response.write_eof()
    return response


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return value


async def _missed(call: Call) -> web.StreamResponse:
    limit, cursor, query = call.page()
    reports, scope, flt = await _report_scope(call, query, MISSED_FILTERS)
    rows, nxt = await reports.missed(scope, flt, limit=limit, cursor=cursor)
    return list_response(models.MissedCall, rows, nxt)


def _report(model: type[BaseModel], method: str, allowed: tuple[str, ...]) -> Handler:
    async def handler(call: Call) -> web.StreamResponse:
        reports, scope, flt = await _report_scope(call, dict(call.request.query), allowed)
        result = await getattr(reports, method)(scope, flt)
        body = result if isinstance(result, dict) else {"items": result}
        body = {**body, **period(scope, flt)}
        return web.json_response(model.model_validate(body).model_dump(mode="json"))

    return handler


def _report_ops() -> list[Operation]:
    base = f"{API}/tenants/{{tenant_id}}"
    errors = (400, 401, 403, 404)
    return [
        Operation(
            "GET",
            f"{base}/calls",
            "List calls (CDRs), newest first; agents see their own calls, supervisors their "
            "departments'",
            "reports",
            _calls,
            response=models.CallDetail,
            is_list=True,
            filters=CALL_FILTERS,
            errors=errors,
        ),
        Operation(
            "GET",
            f"{base}/calls.csv",
            "Export the call list as CSV (streamed; any period up to 400 days)",
            "reports",
            _calls_csv,
            filters=CALL_FILTERS,
            errors=errors,
            media_type="text/csv",
        ),
        Operation(
            "GET",
            f"{base}/reports/missed",
            "Missed inbound calls not yet called back, one row per number",
            "reports",
            _missed,
            response=models.MissedCall,
            is_list=True,
            filters=MISSED_FILTERS,
            errors=errors,
        ),
        Operation(
            "GET",
            f"{base}/reports/employees",
            "Load per employee: calls, answered, missed, talk time",
            "reports",
            _report(models.EmployeeLoadReport, "employee_load", LOAD_FILTERS),
            response=models.EmployeeLoadReport,
            filters=LOAD_FILTERS,
            errors=errors,
        ),
        Operation(
            "GET",
            f"{base}/reports/departments",
            "Load per department: calls, answered, missed, talk time",
            "reports",
            _report(models.DepartmentLoadReport, "department_load", LOAD_FILTERS),
            response=models.DepartmentLoadReport,
            filters=LOAD_FILTERS,
            errors=errors,
        ),
        Operation(
            "GET",
            f"{base}/reports/queues",
            "Queue service level (answered within 20 s), waits, abandons (tenant admins)",
            "reports",
            _report(models.QueueLoadReport, "queue_load", LOAD_FILTERS),
            response=models.QueueLoadReport,
            filters=LOAD_FILTERS,
            errors=errors,
        ),
        Operation(
            "GET",
            f"{base}/reports/hourly",
            "Calls per local hour of the day",
            "reports",
            _report(models.HourlyLoadReport, "hourly_load", CALL_FILTERS),
            response=models.HourlyLoadReport,
            filters=CALL_FILTERS,
            errors=errors,
        ),
        Operation(
            "GET",
            f"{base}/reports/stats",
            "ASR, ACD and NER (formulas in the schema description)",
            "reports",
            _report(models.CallStats, "stats", CALL_FILTERS),
            response=models.CallStats,
            filters=CALL_FILTERS,
            errors=errors,
        ),
    ]


OPERATIONS.extend(_report_ops())


# -- the application --------------------------------------------------------------------------
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def build_rest_app(service: ConfigService) -> web.Application:
    """The REST API as an aiohttp application (mounted by `app.py` on the api's HTTP port)."""

    @web.middleware
    async def request_ids(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        given = request.headers.get("X-Request-Id", "")
        request[REQUEST_ID_KEY] = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        try:
            response = await handler(request)
        except Problem as problem:
            response = problem.response(request)
        except DomainError as error:
            response = problem_from_domain(error).response(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            slug = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}.get(
                exc.status, "http-error"
            )
            response = Problem(exc.status, slug, exc.reason, exc.text or exc.reason).response(
                request
            )
            if exc.status == 405:
                response.headers["Allow"] = exc.headers.get("Allow", "")
        response.headers["X-Request-Id"] = request[REQUEST_ID_KEY]
        return response

    app = web.Application(middlewares=[request_ids], client_max_size=MAX_BODY_BYTES)
    for operation in OPERATIONS:
        app.router.add_route(operation.method, operation.path, _endpoint(service, operation))
    document = openapi_document()

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=DOCS_PAGE, content_type="text/html")

    app.router.add_get(f"{API}/openapi.json", openapi)
    app.router.add_get(f"{API}/docs", docs)
    return app


def _endpoint(service: ConfigService, operation: Operation) -> Any:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        if operation.is_list:
            unknown = set(request.query) - {"limit", "cursor", *operation.filters}
            if unknown:
                raise Problem(
                    400,
                    "bad-query",
                    "Bad query",
                    f"unknown query parameter(s) {', '.join(sorted(unknown))}; "
                    f"filters here: {', '.join(operation.filters) or 'none'}",
                )
        principal = Principal(role=Role.AGENT, tenant_id=None)  # replaced unless public
        if not operation.public:
            principal = await service.authenticate(_bearer(request))
        return await operation.handler(Call(request, principal, service))

    return endpoint


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send Authorization: Bearer <token>")
    return token.strip()


# -- OpenAPI 3.1 ------------------------------------------------------------------------------
_STATUS_TEXT = {
    400: "Bad request (query, headers or ids)",
    401: "Not authenticated",
    403: "The role may not do this",
    404: "Not found (or not visible to this principal)",
    409: "Conflicts with an existing resource",
    412: "If-Match does not name the current version",
    415: "The body is not application/json",
    422: "The body does not validate; `errors` lists every problem",
    503: "A service this request needs is unavailable; nothing was changed",
}


def openapi_document() -> dict[str, Any]:
    used: set[type[BaseModel]] = set()
    for op in OPERATIONS:
        used.update(m for m in (op.body, op.response) if m is not None)
    ordered = sorted(used, key=lambda m: m.__name__)
    _, top = models_json_schema(
        [(m, "validation" if _is_input(m) else "serialization") for m in ordered],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas["Problem"] = {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "request_id": {"type": ["string", "null"]},
            "current_version": {"type": "integer"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["pointer", "detail"],
                    "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}},
                },
            },
        },
    }
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation_doc(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callmesh API",
            "version": "1.0.0",
            "description": "Configuration of record for callmesh tenants. Errors are RFC 9457 "
            "problem details; single resources carry an ETag (their version) and honour "
            "If-Match for safe concurrent edits; lists page with `limit` and `cursor`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _is_input(model: type[BaseModel]) -> bool:
    return issubclass(model, models.Input)


def _operation_doc(op: Operation) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        }
        for name in re.findall(r"{(\w+)}", op.path)
    ]
    if op.is_list:
        params.append(
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_LIMIT,
                    "default": DEFAULT_LIMIT,
                },
            }
        )
        params.append(
            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}}
        )
    for name in op.filters:
        params.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": FILTER_DOCS.get(name, "exact match; a trailing * matches a prefix"),
            }
        )
    if op.method in ("PATCH", "PUT", "DELETE"):
        params.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "the ETag you read; 412 when it is no longer current",
            }
        )
    doc: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{op.method.lower()}_{op.path.removeprefix(API).strip('/')}".replace(
            "/", "_"
        )
        .replace("{", "")
        .replace("}", ""),
        "parameters": params,
        "responses": {},
    }
    if op.public:
        doc["security"] = []
    if op.body is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    success: dict[str, Any] = {"description": "OK"}
    if op.response is not None:
        schema: dict[str, Any] = _ref(op.response)
        if op.is_list:
            schema = {
                "type": "object",
                "required": ["items", "next_cursor"],
                "properties": {
                    "items": {"type": "array", "items": schema},
                    "next_cursor": {"type": ["string", "null"]},
                },
            }
        success["content"] = {"application/json": {"schema": schema}}
        if not op.is_list and issubclass(op.response, models.Stored):
            success["headers"] = {"ETag": {"schema": {"type": "string"}}}
    elif op.is_list:
        success["content"] = {"application/json": {"schema": {"type": "object"}}}
    elif op.media_type != "application/json":
        success["content"] = {op.media_type: {"schema": {"type": "string"}}}
    doc["responses"][str(op.status)] = success
    if op.method == "GET" and not op.is_list:
        doc["responses"]["304"] = {"description": "Not modified (If-None-Match)"}
    for status in sorted({*op.errors, *((401,) if not op.public else ())}):
        doc["responses"][str(status)] = {
            "description": _STATUS_TEXT[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return doc


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>callmesh API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem}
h2{margin-top:2rem;border-bottom:1px solid #ccc}
.op{margin:.4rem 0;padding:.4rem .6rem;border-left:4px solid #888;background:#f6f6f6}
.m{display:inline-block;width:4.5rem;font-weight:bold}
.GET{border-color:#2a7}.POST{border-color:#27a}.PATCH{border-color:#a72}.DELETE{border-color:#a22}
code{font-size:14px}
</style></head><body>
<h1>callmesh API</h1>
<p>Machine-readable description: <a href="openapi.json">openapi.json</a> (OpenAPI 3.1).
Authenticate with <code>Authorization: Bearer &lt;token&gt;</code>.</p>
<div id="ops">Loading…</div>
<script>
fetch("openapi.json").then(r => r.json()).then(doc => {
  const byTag = {};
  for (const [path, item] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(item))
      (byTag[op.tags[0]] ??= []).push({path, method: method.toUpperCase(), op});
  const root = document.getElementById("ops");
  root.textContent = "";
  for (const [tag, ops] of Object.entries(byTag)) {
    const h = document.createElement("h2"); h.textContent = tag; root.append(h);
    for (const {path, method, op} of ops) {
      const d = document.createElement("div"); d.className = "op " + method;
      const m = document.createElement("span"); m.className = "m"; m.textContent = method;
      const c = document.createElement("code"); c.textContent = path;
      const s = document.createElement("div"); s.textContent = op.summary;
      d.append(m, c, s); root.append(d);
    }
  }
});
</script></body></html>
"""
