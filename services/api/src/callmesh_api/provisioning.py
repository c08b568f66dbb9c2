"""`Provisioning` gRPC: the configuration of record for the operator and the other services.

A thin adapter: it maps contract messages to the same validated models and the same store the
REST API uses (so a value the REST API refuses is refused here with the same reason), and maps
rows back. Callers are platform components inside the cluster, so there is no per-tenant
principal; writes are audited as `provisioning`.

Ids are the api's UUIDs. An upsert without an id finds its row by the natural key (tenant slug,
user extension, number E.164, trunk name) and creates one when there is none, so the operator,
which knows only Kubernetes resource names, writes idempotently too. Rate tables are kept per
trunk, so a trunk's `rate_table_id` is its own id.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import grpc
from callmesh.common.v1 import common_pb2
from callmesh.provisioning.v1 import provisioning_pb2 as pb
from callmesh.provisioning.v1 import provisioning_pb2_grpc
from callmesh_core.errors import AlreadyExists, DomainError, InvalidArgument, NotFound
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ValidationError

from .domain import models
from .store import NUMBERS, TENANTS, TRUNKS, USERS, ConfigStore, Table

ACTOR = "provisioning"
MAX_PAGE = 500
ModelT = TypeVar("ModelT", bound=BaseModel)

_PERMISSION = {
    pb.PERMISSION_CLASS_INTERNAL: "internal",
    pb.PERMISSION_CLASS_LOCAL: "local",
    pb.PERMISSION_CLASS_LONG_DISTANCE: "long_distance",
    pb.PERMISSION_CLASS_INTERNATIONAL: "international",
}
_TRANSPORT = {pb.TRANSPORT_UDP: "udp", pb.TRANSPORT_TCP: "tcp"}
_CODEC = {
    common_pb2.CODEC_PCMU: "PCMU",
    common_pb2.CODEC_PCMA: "PCMA",
    common_pb2.CODEC_G722: "G722",
    common_pb2.CODEC_OPUS: "opus",
    common_pb2.CODEC_TELEPHONE_EVENT: "telephone-event",
}


def _validate(model: type[ModelT], data: Mapping[str, Any]) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise InvalidArgument(problems) from None


def _stamp(value: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _opt_uuid(text: str, what: str) -> uuid.UUID | None:
    if not text:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidArgument(f"{what} {text!r} is not an id") from None


# -- rows to messages ---------------------------------------------------------------------------
def tenant_message(row: Mapping[str, Any]) -> pb.Tenant:
    return pb.Tenant(
        tenant_id=str(row["id"]),
        slug=row["slug"],
        name=row["name"],
        sip_domain=row["sip_domain"],
        timezone=row["timezone"],
        default_region=row["default_region"],
        language=row["language"],
        default_scenario_id=str(row["default_scenario_id"] or ""),
        max_channels=row["max_channels"],
        enabled=row["enabled"],
        version=row["version"],
        updated_at=_stamp(row["updated_at"]),
    )


def user_message(row: Mapping[str, Any]) -> pb.User:
    by_name = {v: k for k, v in _PERMISSION.items()}
    return pb.User(
        tenant_id=str(row["tenant_id"]),
        user_id=str(row["id"]),
        extension=row["extension"],
        name=row["name"],
        email=row["email"] or "",
        department_id=str(row["department_id"] or ""),
        sip_credentials=pb.DigestCredentials(
            username=row["extension"],
            realm=row["sip_realm"],
            ha1_md5=row["sip_ha1_md5"],
            ha1_sha256=row["sip_ha1_sha256"],
        ),
        permission_class=by_name.get(row["permission_class"], pb.PERMISSION_CLASS_UNSPECIFIED),
        outbound_caller_id=row["outbound_caller_id"] or "",
        mobile=row["mobile"] or "",
        max_contacts=row["max_contacts"],
        enabled=row["enabled"],
        version=row["version"],
        updated_at=_stamp(row["updated_at"]),
    )


def number_message(row: Mapping[str, Any]) -> pb.Number:
    return pb.Number(
        tenant_id=str(row["tenant_id"]),
        e164=row["e164"],
        description=row["description"],
        scenario_id=str(row["scenario_id"] or ""),
        trunk_id=str(row["trunk_id"] or ""),
        enabled=row["enabled"],
        version=row["version"],
        updated_at=_stamp(row["updated_at"]),
    )


def trunk_message(row: Mapping[str, Any]) -> pb.Trunk:
    codec_by_name = {v: k for k, v in _CODEC.items()}
    transport_by_name = {v: k for k, v in _TRANSPORT.items()}
    message = pb.Trunk(
        tenant_id=str(row["tenant_id"]),
        trunk_id=str(row["id"]),
        name=row["name"],
        host=row["host"],
        port=row["port"],
        rate_table_id=str(row["id"]),
        transport=transport_by_name.get(row["transport"], pb.TRANSPORT_UNSPECIFIED),
        codecs=[codec_by_name[c] for c in row["codecs"] if c in codec_by_name],
        channel_limit=row["channel_limit"],
        tech_prefix=row["tech_prefix"],
        send_e164=row["send_e164"],
        enabled=row["enabled"],
        version=row["version"],
        updated_at=_stamp(row["updated_at"]),
    )
    if row["auth_mode"] == "ip":
        message.ip.source_cidrs.extend(row["source_addresses"])
    else:
        message.registration.username = row["username"] or ""
        # The password itself is never read back; a Secret reference is not secret.
        if row["password_secret"]:
            message.registration.password_secret = row["password_secret"]
    return message


class NotYetImplemented(DomainError):
    """A contract method whose feature has not landed; callers get UNIMPLEMENTED, not a guess."""

    status_code = grpc.StatusCode.UNIMPLEMENTED


class ProvisioningServicer(provisioning_pb2_grpc.ProvisioningServicer):
    def __init__(self, store: ConfigStore) -> None:
        self.store = store

    # -- lookups -----------------------------------------------------------------------------
    async def _find(
        self, table: Table, tenant_id: uuid.UUID | None, **filters: str
    ) -> dict[str, Any] | None:
        rows, _ = await self.store.list(table, tenant_id, limit=1, filters=filters)
        return rows[0] if rows else None

    async def _tenant(self, tenant_id: str) -> dict[str, Any]:
        if not tenant_id:
            raise InvalidArgument("tenant_id is required")
        row_id = _opt_uuid(tenant_id, "tenant_id")
        assert row_id is not None
        return await self.store.get(TENANTS, row_id)

    async def _row_id(
        self,
        table: Table,
        tenant_id: uuid.UUID | None,
        given: str,
        what: str,
        natural: tuple[str, str],
    ) -> uuid.UUID:
        """The row an upsert writes: by id when given, else by natural key, else a new id."""
        explicit = _opt_uuid(given, what)
        if explicit is not None:
            return explicit
        found = await self._find(table, tenant_id, **{natural[0]: natural[1]})
        return found["id"] if found is not None else uuid.uuid4()

    async def _page(
        self, table: Table, tenant_id: uuid.UUID | None, size: int, token: str
    ) -> tuple[list[dict[str, Any]], str]:
        limit = min(size or 100, MAX_PAGE)
        rows, nxt = await self.store.list(table, tenant_id, limit=limit, cursor=token or None)
        return rows, nxt or ""

    async def _upsert(
        self,
        table: Table,
        row_id: uuid.UUID,
        values: dict[str, Any],
        tenant_id: uuid.UUID | None,
        expected: int,
    ) -> tuple[dict[str, Any], bool]:
        return await self.store.upsert(
            table,
            row_id,
            values,
            tenant_id=tenant_id,
            expected_version=expected or None,
            actor=ACTOR,
        )

    async def _delete(
        self,
        table: Table,
        tenant_id: uuid.UUID | None,
        row: Mapping[str, Any] | None,
        expected: int,
    ) -> pb.DeleteReply:
        if row is None:
            return pb.DeleteReply(existed=False)
        await self.store.delete(
            table,
            row["id"],
            tenant_id=tenant_id,
            expected_version=expected or None,
            actor=ACTOR,
            request_id=None,
        )
        return pb.DeleteReply(existed=True, version=row["version"] + 1)

    async def _get_or_none(
        self, table: Table, row_id: uuid.UUID | None, tenant_id: uuid.UUID | None
    ) -> dict[str, Any] | None:
        if row_id is None:
            return None
        try:
            return await self.store.get(table, row_id, tenant_id)
        except NotFound:
            return None

    # -- tenants -----------------------------------------------------------------------------
    async def UpsertTenant(
        self, request: pb.UpsertTenantRequest, context: Any
    ) -> pb.UpsertTenantReply:
        t = request.tenant
        body = _validate(
            models.TenantCreate,
            {
                "slug": t.slug,
                "name": t.name or t.slug,
                "timezone": t.timezone or "UTC",
                "default_region": t.default_region or "RU",
                "sip_domain": t.sip_domain or None,
                "language": t.language or "ru",
                "max_channels": t.max_channels,
                "enabled": t.enabled,
            },
        )
        values = body.model_dump()
        values["sip_domain"] = values["sip_domain"] or f"{body.slug}.callmesh.local"
        values["default_scenario_id"] = _opt_uuid(t.default_scenario_id, "default_scenario_id")
        row_id = await self._row_id(TENANTS, None, t.tenant_id, "tenant_id", ("slug", body.slug))
        row, changed = await self._upsert(TENANTS, row_id, values, None, request.expected_version)
        return pb.UpsertTenantReply(tenant=tenant_message(row), changed=changed)

    async def DeleteTenant(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteReply:
        row = await self._get_or_none(TENANTS, _opt_uuid(request.tenant_id, "tenant_id"), None)
        return await self._delete(TENANTS, None, row, request.expected_version)

    async def GetTenant(self, request: pb.GetTenantRequest, context: Any) -> pb.Tenant:
        if request.WhichOneof("key") == "slug":
            row = await self._find(TENANTS, None, slug=request.slug)
            if row is None:
                raise NotFound(f"tenant {request.slug!r} not found")
            return tenant_message(row)
        return tenant_message(await self._tenant(request.tenant_id))

    async def ListTenants(
        self, request: pb.ListTenantsRequest, context: Any
    ) -> pb.ListTenantsReply:
        rows, nxt = await self._page(TENANTS, None, request.page_size, request.page_token)
        return pb.ListTenantsReply(tenants=[tenant_message(r) for r in rows], next_page_token=nxt)

    # -- users -------------------------------------------------------------------------------
    async def UpsertUser(self, request: pb.UpsertUserRequest, context: Any) -> pb.UpsertUserReply:
        u = request.user
        tenant = await self._tenant(u.tenant_id)
        creds = u.sip_credentials
        if creds.username and creds.username != u.extension:
            raise InvalidArgument("sip_credentials.username must equal the extension")
        for name, value, size in (
            ("ha1_md5", creds.ha1_md5, 32),
            ("ha1_sha256", creds.ha1_sha256, 64),
        ):
            if len(value) != size or any(c not in "0123456789abcdef" for c in value):
                raise InvalidArgument(
                    f"sip_credentials.{name} must be {size} lower-case hex digits"
                )
        body = _validate(
            models.UserCreate,
            {
                "name": u.name or u.extension,
                "extension": u.extension,
                "email": u.email or None,
                "mobile": u.mobile or None,
                "department_id": u.department_id or None,
                "permission_class": _PERMISSION.get(u.permission_class, "long_distance"),
                "outbound_caller_id": u.outbound_caller_id or None,
                "max_contacts": u.max_contacts,
                "enabled": u.enabled,
            },
        )
        values = body.model_dump(exclude={"login_password", "managed_departments"})
        values.update(
            sip_realm=creds.realm or tenant["sip_domain"],
            sip_ha1_md5=creds.ha1_md5,
            sip_ha1_sha256=creds.ha1_sha256,
        )
        row_id = await self._row_id(
            USERS, tenant["id"], u.user_id, "user_id", ("extension", body.extension)
        )
        row, changed = await self._upsert(
            USERS, row_id, values, tenant["id"], request.expected_version
        )
        return pb.UpsertUserReply(user=user_message(row), changed=changed)

    async def DeleteUser(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteReply:
        tenant = await self._tenant(request.tenant_id)
        row = await self._get_or_none(USERS, _opt_uuid(request.id, "id"), tenant["id"])
        return await self._delete(USERS, tenant["id"], row, request.expected_version)

    async def GetUser(self, request: pb.GetUserRequest, context: Any) -> pb.User:
        tenant = await self._tenant(request.tenant_id)
        row_id = _opt_uuid(request.user_id, "user_id")
        if row_id is None:
            raise InvalidArgument("user_id is required")
        return user_message(await self.store.get(USERS, row_id, tenant["id"]))

    async def GetUserByExtension(
        self, request: pb.GetUserByExtensionRequest, context: Any
    ) -> pb.User:
        tenant = await self._tenant(request.tenant_id)
        row = await self._find(USERS, tenant["id"], extension=request.extension)
        if row is None:
            raise NotFound(f"extension {request.extension!r} not found")
        return user_message(row)

    async def ListUsers(self, request: pb.ListUsersRequest, context: Any) -> pb.ListUsersReply:
        tenant = await self._tenant(request.tenant_id)
        rows, nxt = await self._page(USERS, tenant["id"], request.page_size, request.page_token)
        return pb.ListUsersReply(users=[user_message(r) for r in rows], next_page_token=nxt)

    # -- numbers -----------------------------------------------------------------------------
    async def UpsertNumber(
        self, request: pb.UpsertNumberRequest, context: Any
    ) -> pb.UpsertNumberReply:
        n = request.number
        tenant = await self._tenant(n.tenant_id)
        body = _validate(
            models.NumberCreate,
            {"e164": n.e164, "description": n.description, "enabled": n.enabled},
        )
        values = body.model_dump()
        values["scenario_id"] = _opt_uuid(n.scenario_id, "scenario_id")
        values["trunk_id"] = _opt_uuid(n.trunk_id, "trunk_id")
        # Numbers are unique platform-wide: look across tenants so that another tenant's
        # number is refused (ALREADY_EXISTS from the store) rather than duplicated.
        found = await self._number(body.e164)
        row_id = found["id"] if found is not None else uuid.uuid4()
        if found is not None and found["tenant_id"] != tenant["id"]:
            raise AlreadyExists(f"number {body.e164} belongs to another tenant")
        row, changed = await self._upsert(
            NUMBERS, row_id, values, tenant["id"], request.expected_version
        )
        return pb.UpsertNumberReply(number=number_message(row), changed=changed)

    async def _number(self, e164: str) -> dict[str, Any] | None:
        body = _validate(models.NumberCreate, {"e164": e164})
        async with self.store.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM numbers WHERE e164 = $1", body.e164)
        return dict(row) if row is not None else None

    async def DeleteNumber(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteReply:
        tenant = await self._tenant(request.tenant_id)
        row = await self._number(request.id)
        if row is not None and row["tenant_id"] != tenant["id"]:
            row = None
        return await self._delete(NUMBERS, tenant["id"], row, request.expected_version)

    async def GetNumber(self, request: pb.GetNumberRequest, context: Any) -> pb.Number:
        row = await self._number(request.e164)
        if row is None:
            raise NotFound(f"number {request.e164} not found")
        return number_message(row)

    async def ListNumbers(
        self, request: pb.ListNumbersRequest, context: Any
    ) -> pb.ListNumbersReply:
        tenant = await self._tenant(request.tenant_id)
        rows, nxt = await self._page(NUMBERS, tenant["id"], request.page_size, request.page_token)
        return pb.ListNumbersReply(numbers=[number_message(r) for r in rows], next_page_token=nxt)

    # -- trunks ------------------------------------------------------------------------------
    async def UpsertTrunk(
        self, request: pb.UpsertTrunkRequest, context: Any
    ) -> pb.UpsertTrunkReply:
        t = request.trunk
        tenant = await self._tenant(t.tenant_id)
        auth = t.WhichOneof("auth")
        if auth is None:
            raise InvalidArgument("a trunk needs registration or ip authentication")
        unknown = [c for c in t.codecs if c not in _CODEC]
        if unknown:
            raise InvalidArgument(f"unknown codec value(s) {unknown}")
        registration = t.registration if auth == "registration" else None
        body = _validate(
            models.TrunkCreate,
            {
                "name": t.name,
                "auth_mode": "ip" if auth == "ip" else "registration",
                "host": t.host,
                "port": t.port or 5060,
                "transport": _TRANSPORT.get(t.transport, "udp"),
                "source_addresses": list(t.ip.source_cidrs) if auth == "ip" else [],
                "username": (registration.username or None) if registration else None,
                "secret": (registration.password or None) if registration else None,
                "codecs": [_CODEC[c] for c in t.codecs] or ["PCMU", "PCMA"],
                "tech_prefix": t.tech_prefix,
                "send_e164": t.send_e164,
                "enabled": t.enabled,
            },
        )
        values = body.model_dump(exclude={"rate_table"})
        values["channel_limit"] = t.channel_limit  # 0 = no limit, as carriers may say
        values["password_secret"] = (registration.password_secret or None) if registration else None
        if auth == "ip" and not values["source_addresses"]:
            raise InvalidArgument("ip.source_cidrs needs at least one address")
        if registration and not (
            values["username"] and (values["secret"] or values["password_secret"])
        ):
            raise InvalidArgument("registration needs a username and a password or secret")
        row_id = await self._row_id(
            TRUNKS, tenant["id"], t.trunk_id, "trunk_id", ("name", body.name)
        )
        row, changed = await self._upsert(
            TRUNKS, row_id, values, tenant["id"], request.expected_version
        )
        return pb.UpsertTrunkReply(trunk=trunk_message(row), changed=changed)

    async def DeleteTrunk(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteReply:
        tenant = await self._tenant(request.tenant_id)
        row = await self._get_or_none(TRUNKS, _opt_uuid(request.id, "id"), tenant["id"])
        return await self._delete(TRUNKS, tenant["id"], row, request.expected_version)

    async def GetTrunk(self, request: pb.GetTrunkRequest, context: Any) -> pb.Trunk:
        tenant = await self._tenant(request.tenant_id)
        if request.WhichOneof("key") == "name":
            row = await self._find(TRUNKS, tenant["id"], name=request.name)
            if row is None:
                raise NotFound(f"trunk {request.name!r} not found")
            return trunk_message(row)
        row_id = _opt_uuid(request.trunk_id, "trunk_id")
        if row_id is None:
            raise InvalidArgument("trunk_id or name is required")
        return trunk_message(await self.store.get(TRUNKS, row_id, tenant["id"]))

    async def GetTrunkBySource(self, request: pb.GetTrunkBySourceRequest, context: Any) -> pb.Trunk:
        try:
            address = str(ipaddress.ip_address(request.address))
        except ValueError:
            raise InvalidArgument(f"{request.address!r} is not an IP address") from None
        async with self.store.pool.acquire() as conn:
            # The most specific matching network wins when two trunks' ranges overlap.
            row = await conn.fetchrow(
                "SELECT tr.* FROM trunks tr"
                " CROSS JOIN LATERAL (SELECT max(masklen(c::cidr)) AS len"
                "   FROM unnest(tr.source_addresses) AS c WHERE $1::inet <<= c::cidr) AS m"
                " WHERE tr.enabled AND tr.auth_mode = 'ip' AND m.len IS NOT NULL"
                " ORDER BY m.len DESC, tr.created_at LIMIT 1",
                address,
            )
        if row is None:
            raise NotFound(f"no trunk accepts calls from {address}")
        return trunk_message(dict(row))

    async def ListTrunks(self, request: pb.ListTrunksRequest, context: Any) -> pb.ListTrunksReply:
        tenant = await self._tenant(request.tenant_id)
        rows, nxt = await self._page(TRUNKS, tenant["id"], request.page_size, request.page_token)
        return pb.ListTrunksReply(trunks=[trunk_message(r) for r in rows], next_page_token=nxt)

    async def StreamRates(
        self, request: pb.StreamRatesRequest, context: Any
    ) -> AsyncIterator[pb.Rate]:
        tenant = await self._tenant(request.tenant_id)
        row_id = _opt_uuid(request.rate_table_id, "rate_table_id")
        if row_id is None:
            raise InvalidArgument("rate_table_id is required")
        trunk = await self.store.get(TRUNKS, row_id, tenant["id"])
        for rate in trunk["rate_table"]:
            yield pb.Rate(
                prefix=rate["prefix"],
                per_minute=rate["per_minute"],
                from_hour=rate.get("from_hour", 0),
                to_hour=rate.get("to_hour", 24),
            )

    # -- scenarios ---------------------------------------------------------------------------
    async def GetScenario(self, request: pb.GetScenarioRequest, context: Any) -> pb.Scenario:
        # Scenarios are stored by the api once their REST editing with routing's validation
        # lands (issues 5 and 6); until then no scenario exists to read.
        raise NotYetImplemented("scenarios are not stored by this api version yet")

    async def GetRoutingConfig(
        self, request: pb.GetRoutingConfigRequest, context: Any
    ) -> pb.RoutingConfig:
        tenant = await self._tenant(request.tenant_id)
        async with self.store.pool.acquire() as conn:
            # document::text: PostgreSQL renders the JSON once, instead of a decode and
            # re-encode here (rate tables can hold a million prefixes).
            row = await conn.fetchrow(
                "SELECT document::text AS document, version, updated_at FROM routing_configs"
                " WHERE tenant_id = $1",
                tenant["id"],
            )
        if row is None:
            raise NotFound(f"tenant {tenant['slug']!r} has no routing configuration")
        return pb.RoutingConfig(
            tenant_id=str(tenant["id"]),
            document_json=row["document"],
            version=row["version"],
            updated_at=_stamp(row["updated_at"]),
        )
