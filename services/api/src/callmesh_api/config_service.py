"""Configuration use cases: who may do what to which resource, on top of the store.

The REST handlers and the `Provisioning` gRPC servicer both call this; neither re-implements a
rule. Authorisation follows `domain.roles`: outside a principal's tenant everything is *not
found*; inside it, a role that may look but not touch gets *permission denied*.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from callmesh_core.errors import (
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

from .domain import models
from .domain.credentials import (
    LoginPasswords,
    digest_secrets,
    generate_api_token,
    generate_sip_password,
    hash_api_token,
)
from .domain.roles import Principal, Role
from .store import (
    DEPARTMENTS,
    NUMBERS,
    ROUTING_CONFIGS,
    TENANTS,
    TRUNKS,
    USERS,
    ConfigStore,
    Table,
)

SESSION_DAYS = 1


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    message: str


class RoutingValidator(Protocol):
    """Routing owns what a routing document means; the api asks it before storing one."""

    async def validate(
        self, tenant_id: uuid.UUID, document: Mapping[str, Any]
    ) -> list[ConfigProblem]: ...


class ConfigRejected(InvalidArgument):
    """The routing document has problems; all of them are listed, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__(
            f"the routing configuration has {len(problems)} problem(s): "
            + "; ".join(f"{p.path}: {p.message}" for p in problems)
        )
        self.problems = problems


class Unauthenticated(DomainError):
    """No credentials, or credentials that do not identify anyone."""

    status_code = grpc.StatusCode.UNAUTHENTICATED


TENANT_RESOURCES: dict[str, Table] = {
    "departments": DEPARTMENTS,
    "users": USERS,
    "trunks": TRUNKS,
    "numbers": NUMBERS,
}


def user_view(row: Mapping[str, Any], managed: list[uuid.UUID]) -> dict[str, Any]:
    return {**row, "sip_username": row["extension"], "managed_departments": managed}


def trunk_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {**row, "has_secret": row.get("secret") is not None}


class ConfigService:
    def __init__(
        self,
        store: ConfigStore,
        passwords: LoginPasswords | None = None,
        routing_validator: RoutingValidator | None = None,
    ) -> None:
        self.store = store
        self.passwords = passwords or LoginPasswords()
        self.routing_validator = routing_validator

    # -- authentication ------------------------------------------------------------------
    async def authenticate(self, token: str) -> Principal:
        async with self.store.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT t.id, t.tenant_id, t.user_id, t.role, t.name FROM api_tokens t"
                " WHERE t.token_hash = $1 AND t.revoked_at IS NULL"
                " AND (t.expires_at IS NULL OR t.expires_at > now())",
                hash_api_token(token),
            )
            if row is None:
                raise Unauthenticated("the bearer token is unknown, expired or revoked")
            managed: frozenset[uuid.UUID] = frozenset()
            if row["user_id"] is not None and row["role"] == Role.SUPERVISOR:
                managed = frozenset(
                    r["department_id"]
                    for r in await conn.fetch(
                        "SELECT department_id FROM supervisor_departments WHERE user_id = $1",
                        row["user_id"],
                    )
                )
        return Principal(
            role=Role(row["role"]),
            tenant_id=row["tenant_id"],
            user_id=row["user_id"],
            managed_departments=managed,
            name=row["name"],
        )

    async def ensure_platform_token(self, token: str, name: str = "bootstrap") -> None:
        """Make `token` a platform-admin token (used by `make run` and first installs)."""
        async with self.store.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO api_tokens (id, tenant_id, role, name, token_hash)"
                " VALUES ($1, NULL, 'platform_admin', $2, $3) ON CONFLICT (token_hash) DO NOTHING",
                uuid.uuid4(),
                name,
                hash_api_token(token),
            )

    async def login(self, body: models.Login) -> models.TokenCreated:
        async with self.store.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT u.id, u.tenant_id, u.role, u.password_hash FROM users u"
                " JOIN tenants t ON t.id = u.tenant_id"
                " WHERE t.slug = $1 AND lower(u.email) = lower($2)",
                body.tenant,
                body.email,
            )
        # The same answer for an unknown user and a wrong password: no account enumeration.
        stored = row["password_hash"] if row is not None else None
        if row is None or stored is None or not self.passwords.verify(stored, body.password):
            if row is None:
                self.passwords.hash(body.password)  # spend the same time as a real check
            raise Unauthenticated("tenant, email or password is wrong")
        return await self._issue_token(
            tenant_id=row["tenant_id"],
            user_id=row["id"],
            role=Role(row["role"]),
            name=f"login:{body.email.lower()}",
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=SESSION_DAYS),
        )

    async def create_token(
        self, principal: Principal, tenant_id: uuid.UUID, body: models.TokenCreate
    ) -> models.TokenCreated:
        await self._require_configure(principal, tenant_id, "tokens")
        if body.user_id is not None:
            await self.store.get(USERS, body.user_id, tenant_id)
        expires = (
            dt.datetime.now(dt.UTC) + dt.timedelta(days=body.expires_in_days)
            if body.expires_in_days
            else None
        )
        return await self._issue_token(
            tenant_id=tenant_id,
            user_id=body.user_id,
            role=Role(body.role),
            name=body.name,
            expires_at=expires,
        )

    async def _issue_token(
        self,
        *,
        tenant_id: uuid.UUID | None,
        user_id: uuid.UUID | None,
        role: Role,
        name: str,
        expires_at: dt.datetime | None,
    ) -> models.TokenCreated:
        token = generate_api_token()
        token_id = uuid.uuid4()
        async with self.store.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO api_tokens (id, tenant_id, user_id, role, name, token_hash,"
                " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                token_id,
                tenant_id,
                user_id,
                role.value,
                name,
                hash_api_token(token),
                expires_at,
            )
        return models.TokenCreated(
            id=token_id, name=name, role=role, token=token, expires_at=expires_at
        )

    # -- authorisation helpers -----------------------------------------------------------
    async def tenant(self, principal: Principal, tenant_id: uuid.UUID) -> dict[str, Any]:
        if not principal.sees_tenant(tenant_id):
            raise NotFound(f"tenant {tenant_id} not found")
        return await self.store.get(TENANTS, tenant_id)

    async def _require_configure(
        self, principal: Principal, tenant_id: uuid.UUID, what: str
    ) -> dict[str, Any]:
        tenant = await self.tenant(principal, tenant_id)
        if not principal.configures_tenant(tenant_id):
            raise PermissionDenied(f"the {principal.role.value} role cannot change {what}")
        return tenant

    async def _require_read_config(self, principal: Principal, tenant_id: uuid.UUID) -> None:
        await self.tenant(principal, tenant_id)
        if not principal.reads_tenant_config(tenant_id):
            raise PermissionDenied(f"the {principal.role.value} role cannot read this")

    # -- tenants -------------------------------------------------------------------------
    async def list_tenants(
        self, principal: Principal, *, limit: int, cursor: str | None, filters: dict[str, str]
    ) -> tuple[list[dict[str, Any]], str | None]:
        if principal.role is Role.PLATFORM_ADMIN:
            return await self.store.list(TENANTS, None, limit=limit, cursor=cursor, filters=filters)
        assert principal.tenant_id is not None
        own = await self.store.get(TENANTS, principal.tenant_id)
        matches = all(str(own.get(k)) == v for k, v in filters.items() if k in TENANTS.filters)
        return ([own] if matches and not cursor else []), None

    async def create_tenant(
        self, principal: Principal, body: models.TenantCreate, request_id: str | None
    ) -> dict[str, Any]:
        if principal.role is not Role.PLATFORM_ADMIN:
            raise PermissionDenied("only a platform admin creates tenants")
        values = body.model_dump()
        values["sip_domain"] = values["sip_domain"] or f"{body.slug}.callmesh.local"
        return await self.store.create(
            TENANTS, values, tenant_id=None, actor=principal.actor, request_id=request_id
        )

    async def update_tenant(
        self,
        principal: Principal,
        tenant_id: uuid.UUID,
        body: models.TenantUpdate,
        if_match: int | None,
        request_id: str | None,
    ) -> dict[str, Any]:
        await self._require_configure(principal, tenant_id, "the tenant")
        return await self.store.update(
            TENANTS,
            tenant_id,
            body.model_dump(exclude_unset=True),
            tenant_id=None,
            expected_version=if_match,
            actor=principal.actor,
            request_id=request_id,
        )

    async def delete_tenant(
        self,
        principal: Principal,
        tenant_id: uuid.UUID,
        if_match: int | None,
        request_id: str | None,
    ) -> None:
        await self.tenant(principal, tenant_id)
        if principal.role is not Role.PLATFORM_ADMIN:
            raise PermissionDenied("only a platform admin deletes tenants")
        await self.store.delete(
            TENANTS,
            tenant_id,
            tenant_id=None,
            expected_version=if_match,
            actor=principal.actor,
            request_id=request_id,
        )

    # -- resources inside a tenant -------------------------------------------------------
    async def list_resources(
        self,
        principal: Principal,
        kind: str,
        tenant_id: uuid.UUID,
        *,
        limit: int,
        cursor: str | None,
        filters: dict[str, str],
    ) -> tuple[list[dict[str, Any]], str | None]:
        table = TENANT_RESOURCES[kind]
        restrict_ids = restrict_departments = None
        if table is USERS or table is DEPARTMENTS:
            await self.tenant(principal, tenant_id)
            scope = principal.user_scope()
            if not scope.all_users:
                if table is DEPARTMENTS:
                    restrict_ids = list(scope.departments)
                else:
                    restrict_ids = [scope.self_id] if scope.self_id else []
                    restrict_departments = list(scope.departments)
        else:
            await self._require_read_config(principal, tenant_id)
        rows, next_cursor = await self.store.list(
            table,
            tenant_id,
            limit=limit,
            cursor=cursor,
            filters=filters,
            restrict_ids=restrict_ids,
            restrict_departments=restrict_departments,
        )
        return [await self._view(table, row) for row in rows], next_cursor

    async def get_resource(
        self, principal: Principal, kind: str, tenant_id: uuid.UUID, row_id: uuid.UUID
    ) -> dict[str, Any]:
        table = TENANT_RESOURCES[kind]
        if table is USERS or table is DEPARTMENTS:
            await self.tenant(principal, tenant_id)
            row = await self.store.get(table, row_id, tenant_id)
            scope = principal.user_scope()
            visible = (
                scope.all_users or row_id in scope.departments
                if table is DEPARTMENTS
                else scope.allows(row_id, row["department_id"])
            )
            if not visible:
                raise NotFound(f"{table.resource} {row_id} not found")
        else:
            await self._require_read_config(principal, tenant_id)
            row = await self.store.get(table, row_id, tenant_id)
        return await self._view(table, row)

    async def create_resource(
        self,
        principal: Principal,
        kind: str,
        tenant_id: uuid.UUID,
        body: models.Input,
        request_id: str | None,
    ) -> dict[str, Any]:
        table = TENANT_RESOURCES[kind]
        tenant = await self._require_configure(principal, tenant_id, kind)
        values = body.model_dump()
        credentials: models.SipCredentials | None = None
        managed: list[uuid.UUID] = []
        if table is USERS:
            values, credentials, managed = self._user_values(values, tenant, creating=True)
        if table is TRUNKS:
            self._check_trunk(values)
        async with self.store.pool.acquire() as conn, conn.transaction():
            row = await self.store.create(
                table,
                values,
                tenant_id=tenant_id,
                actor=principal.actor,
                request_id=request_id,
                conn=conn,
            )
            if table is USERS:
                await self._set_managed(conn, tenant_id, row["id"], managed)
        view = await self._view(table, row)
        if credentials is not None:
            view["sip_credentials"] = credentials
        return view

    async def update_resource(
        self,
        principal: Principal,
        kind: str,
        tenant_id: uuid.UUID,
        row_id: uuid.UUID,
        body: models.Input,
        if_match: int | None,
        request_id: str | None,
    ) -> dict[str, Any]:
        table = TENANT_RESOURCES[kind]
        tenant = await self._require_configure(principal, tenant_id, kind)
        values = body.model_dump(exclude_unset=True)
        managed: list[uuid.UUID] | None = None
        if table is USERS:
            managed = values.pop("managed_departments", None)
            values, _, _ = self._user_values(values, tenant, creating=False)
        async with self.store.pool.acquire() as conn, conn.transaction():
            if not values and managed is None:
                row = await self.store.get(table, row_id, tenant_id)
            else:
                row = await self.store.update(
                    table,
                    row_id,
                    values,
                    tenant_id=tenant_id,
                    expected_version=if_match,
                    actor=principal.actor,
                    request_id=request_id,
                    conn=conn,
                )
            if table is USERS and managed is not None:
                await self._set_managed(conn, tenant_id, row_id, managed)
        if table is TRUNKS:
            self._check_trunk(row)
        return await self._view(table, row)

    async def delete_resource(
        self,
        principal: Principal,
        kind: str,
        tenant_id: uuid.UUID,
        row_id: uuid.UUID,
        if_match: int | None,
        request_id: str | None,
    ) -> None:
        table = TENANT_RESOURCES[kind]
        await self._require_configure(principal, tenant_id, kind)
        await self.store.delete(
            table,
            row_id,
            tenant_id=tenant_id,
            expected_version=if_match,
            actor=principal.actor,
            request_id=request_id,
        )

    async def rotate_sip_password(
        self,
        principal: Principal,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        request_id: str | None,
    ) -> models.SipCredentials:
        """A new SIP password for a user (shown once); the old one stops working at once."""
        tenant = await self._require_configure(principal, tenant_id, "users")
        user = await self.store.get(USERS, user_id, tenant_id)
        password = generate_sip_password()
        secrets = digest_secrets(user["extension"], tenant["sip_domain"], password)
        await self.store.update(
            USERS,
            user_id,
            {
                "sip_realm": secrets.realm,
                "sip_ha1_md5": secrets.ha1_md5,
                "sip_ha1_sha256": secrets.ha1_sha256,
            },
            tenant_id=tenant_id,
            expected_version=None,
            actor=principal.actor,
            request_id=request_id,
        )
        return models.SipCredentials(
            username=user["extension"], realm=secrets.realm, password=password
        )

    # -- routing configuration -----------------------------------------------------------
    async def routing_config_row(self, tenant_id: uuid.UUID) -> dict[str, Any] | None:
        rows, _ = await self.store.list(ROUTING_CONFIGS, tenant_id, limit=1)
        return rows[0] if rows else None

    async def get_routing_config(
        self, principal: Principal, tenant_id: uuid.UUID
    ) -> dict[str, Any]:
        await self._require_read_config(principal, tenant_id)
        row = await self.routing_config_row(tenant_id)
        if row is None:
            raise NotFound("this tenant has no routing configuration yet")
        return row

    async def put_routing_config(
        self,
        principal: Principal,
        tenant_id: uuid.UUID,
        document: dict[str, Any],
        if_match: int | None,
        request_id: str | None,
    ) -> dict[str, Any]:
        await self._require_configure(principal, tenant_id, "the routing configuration")
        if self.routing_validator is None:
            raise Unavailable("routing validation is not configured; nothing was saved")
        problems = await self.routing_validator.validate(tenant_id, document)
        if problems:
            raise ConfigRejected(problems)
        existing = await self.routing_config_row(tenant_id)
        row, _ = await self.store.upsert(
            ROUTING_CONFIGS,
            existing["id"] if existing is not None else uuid.uuid4(),
            {"document": document},
            tenant_id=tenant_id,
            expected_version=if_match,
            actor=principal.actor,
            request_id=request_id,
        )
        return row

    async def audit(
        self, principal: Principal, tenant_id: uuid.UUID, *, limit: int
    ) -> list[dict[str, Any]]:
        await self._require_configure(principal, tenant_id, "the audit log")
        async with self.store.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, actor, action, resource, resource_id, before, after, request_id, at"
                " FROM audit_log WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
                tenant_id,
                limit,
            )
        return [dict(r) for r in rows]

    # -- details -------------------------------------------------------------------------
    def _user_values(
        self, values: dict[str, Any], tenant: Mapping[str, Any], *, creating: bool
    ) -> tuple[dict[str, Any], models.SipCredentials | None, list[uuid.UUID]]:
        managed = list(values.pop("managed_departments", None) or [])
        password = values.pop("login_password", None)
        if password is not None:
            values["password_hash"] = self.passwords.hash(password)
        credentials = None
        if creating:
            sip_password = generate_sip_password()
            secrets = digest_secrets(values["extension"], tenant["sip_domain"], sip_password)
            values.update(
                sip_realm=secrets.realm,
                sip_ha1_md5=secrets.ha1_md5,
                sip_ha1_sha256=secrets.ha1_sha256,
            )
            credentials = models.SipCredentials(
                username=values["extension"], realm=secrets.realm, password=sip_password
            )
        return values, credentials, managed

    @staticmethod
    def _check_trunk(values: Mapping[str, Any]) -> None:
        if values.get("auth_mode") == "ip" and not values.get("source_addresses"):
            raise InvalidArgument("an IP-authenticated trunk needs at least one source address")
        if values.get("auth_mode") == "registration" and not (
            values.get("username") and values.get("secret")
        ):
            raise InvalidArgument("a registering trunk needs a username and a secret")

    async def _set_managed(
        self, conn: Any, tenant_id: uuid.UUID, user_id: uuid.UUID, managed: list[uuid.UUID]
    ) -> None:
        await conn.execute("DELETE FROM supervisor_departments WHERE user_id = $1", user_id)
        if not managed:
            return
        found = await conn.fetchval(
            "SELECT count(*) FROM departments WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
            tenant_id,
            managed,
        )
        if found != len(set(managed)):
            raise InvalidArgument("managed_departments names a department that does not exist")
        await conn.executemany(
            "INSERT INTO supervisor_departments (user_id, department_id) VALUES ($1, $2)",
            [(user_id, d) for d in set(managed)],
        )

    async def _view(self, table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
        if table is USERS:
            async with self.store.pool.acquire() as conn:
                managed = [
                    r["department_id"]
                    for r in await conn.fetch(
                        "SELECT department_id FROM supervisor_departments WHERE user_id = $1"
                        " ORDER BY department_id",
                        row["id"],
                    )
                ]
            return user_view(row, managed)
        if table is TRUNKS:
            return trunk_view(row)
        return dict(row)
