"""Request and response bodies of the REST API.

These pydantic models are the single description of each resource: they validate input (with
`extra="forbid"`, so a misspelt field is an error rather than silently ignored), shape output,
and produce the JSON Schemas in the OpenAPI document.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
import zoneinfo
from typing import Annotated, Any, ClassVar, Literal, Self

import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .roles import Role

_SLUG = r"^[a-z0-9][a-z0-9-]{1,62}$"
_EXTENSION = r"^[0-9]{2,6}$"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
CODECS = ("PCMU", "PCMA", "G722", "opus", "telephone-event")


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name such as Europe/Moscow)"
        ) from None
    return value


def _region(value: str) -> str:
    region = value.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {value!r} (use an ISO 3166 code such as RU)")
    return region


def _e164(value: str) -> str:
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("not an international number; write it as +<country><number>") from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError("not a possible phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise ValueError("not a hostname or IP address")
    return value.lower()


def _source_address(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("not an IP address or CIDR network") from None


def _codecs(value: list[str]) -> list[str]:
    unknown = [codec for codec in value if codec not in CODECS]
    if unknown:
        raise ValueError(f"unsupported codec(s) {', '.join(unknown)}; known: {', '.join(CODECS)}")
    if len(set(value)) != len(value):
        raise ValueError("codecs repeat")
    if not value:
        raise ValueError("at least one codec is needed")
    return value


TimeZone = Annotated[str, AfterValidator(_timezone)]
Region = Annotated[str, AfterValidator(_region)]
E164 = Annotated[str, AfterValidator(_e164)]
Host = Annotated[str, AfterValidator(_host)]
SourceAddress = Annotated[str, AfterValidator(_source_address)]
Codecs = Annotated[list[str], AfterValidator(_codecs)]
Extension = Annotated[str, Field(pattern=_EXTENSION, examples=["101"])]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", examples=["ru"])]
PermissionClass = Literal["internal", "local", "long_distance", "international"]


def _no_nul(value: object) -> object:
    """PostgreSQL text cannot hold NUL; refuse it here with a clear reason, anywhere in the body."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("text must not contain NUL (\\u0000) characters")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _no_nul(item)
    elif isinstance(value, list):
        for item in value:
            _no_nul(item)
    return value


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: object) -> object:
        return _no_nul(data)


def _drop_null_from_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    keep: frozenset[str] = getattr(model, "nullable", frozenset())
    for name, prop in schema.get("properties", {}).items():
        options = prop.get("anyOf")
        if name in keep or not options:
            continue
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            prop.pop("anyOf")
            prop.update(rest[0])
        else:
            prop["anyOf"] = rest
        if prop.get("default", ...) is None:
            prop.pop("default")


class Patch(Input):
    """A partial update: a field left out keeps its value; only `nullable` fields may be set
    to null (to clear them). The JSON Schema says so, so clients and generators know it."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra=_drop_null_from_schema
    )
    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _refuse_null_for_required(self) -> Self:
        cleared = sorted(
            name
            for name in self.model_fields_set
            if getattr(self, name) is None and name not in self.nullable
        )
        if cleared:
            raise ValueError(
                f"{', '.join(cleared)} cannot be null; leave a field out to keep its value"
            )
        return self


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Stored(Output):
    id: uuid.UUID
    version: int = Field(description="increases on every change; the resource's ETag")
    created_at: dt.datetime
    updated_at: dt.datetime


# -- tenants ---------------------------------------------------------------------------------
class TenantCreate(Input):
    slug: Annotated[str, Field(pattern=_SLUG, examples=["acme"])]
    name: Name
    timezone: TimeZone = "UTC"
    default_region: Region = "RU"
    sip_domain: Host | None = Field(
        default=None, description="SIP domain and digest realm; default <slug>.callmesh.local"
    )
    language: Language = "ru"
    max_channels: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    enabled: bool = True


class TenantUpdate(Patch):
    nullable = frozenset({"default_scenario_id"})

    name: Name | None = None
    timezone: TimeZone | None = None
    default_region: Region | None = None
    language: Language | None = None
    default_scenario_id: uuid.UUID | None = None
    max_channels: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    enabled: bool | None = None


class Tenant(Stored):
    slug: str
    name: str
    timezone: str
    default_region: str
    sip_domain: str
    language: str
    default_scenario_id: uuid.UUID | None
    max_channels: int
    enabled: bool


# -- departments -----------------------------------------------------------------------------
class DepartmentCreate(Input):
    name: Name
    extension: Extension | None = None


class DepartmentUpdate(Patch):
    nullable = frozenset({"extension"})

    name: Name | None = None
    extension: Extension | None = None


class Department(Stored):
    tenant_id: uuid.UUID
    name: str
    extension: str | None


# -- users -----------------------------------------------------------------------------------
TenantRole = Literal["tenant_admin", "supervisor", "agent"]


class UserCreate(Input):
    name: Name
    extension: Extension
    role: TenantRole = "agent"
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)] | None = (
        None
    )
    department_id: uuid.UUID | None = None
    mobile: E164 | None = None
    login_password: Annotated[str, Field(min_length=10, max_length=200)] | None = Field(
        default=None, description="cabinet login password; stored as argon2id, never returned"
    )
    managed_departments: list[uuid.UUID] = Field(
        default_factory=list, description="for supervisors: the departments they see"
    )
    permission_class: PermissionClass = "long_distance"
    outbound_caller_id: E164 | None = None
    max_contacts: Annotated[int, Field(ge=0, le=100)] = 0
    enabled: bool = True


class UserUpdate(Patch):
    nullable = frozenset({"email", "department_id", "mobile", "outbound_caller_id"})

    name: Name | None = None
    role: TenantRole | None = None
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)] | None = (
        None
    )
    department_id: uuid.UUID | None = None
    mobile: E164 | None = None
    login_password: Annotated[str, Field(min_length=10, max_length=200)] | None = None
    managed_departments: list[uuid.UUID] | None = None
    permission_class: PermissionClass | None = None
    outbound_caller_id: E164 | None = None
    max_contacts: Annotated[int, Field(ge=0, le=100)] | None = None
    enabled: bool | None = None


class User(Stored):
    tenant_id: uuid.UUID
    name: str
    extension: str
    role: str
    email: str | None
    department_id: uuid.UUID | None
    mobile: str | None
    sip_username: str = Field(description="the digest username: the extension")
    sip_realm: str
    managed_departments: list[uuid.UUID] = Field(default_factory=list)
    permission_class: str
    outbound_caller_id: str | None
    max_contacts: int
    enabled: bool


class SipCredentials(Output):
    username: str
    realm: str
    password: str = Field(description="shown once; only digest HA1 hashes are stored")


class UserCreated(User):
    sip_credentials: SipCredentials


# -- trunks ----------------------------------------------------------------------------------
class Rate(Input):
    prefix: Annotated[str, Field(pattern=r"^[0-9]{0,15}$")]
    per_minute: Annotated[float, Field(ge=0)]
    from_hour: Annotated[int, Field(ge=0, le=23)] = 0
    to_hour: Annotated[int, Field(ge=1, le=24)] = 24


class TrunkCreate(Input):
    name: Name
    auth_mode: Literal["ip", "registration"]
    host: Host
    port: Annotated[int, Field(ge=1, le=65535)] = 5060
    transport: Literal["udp", "tcp"] = "udp"
    source_addresses: list[SourceAddress] = Field(default_factory=list)
    username: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    secret: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="registration password; write-only"
    )
    codecs: Codecs = Field(default_factory=lambda: ["PCMU", "PCMA"])
    channel_limit: Annotated[int, Field(ge=1, le=100000)] = 30
    rate_table: list[Rate] = Field(default_factory=list)
    tech_prefix: Annotated[str, Field(pattern=r"^[0-9#*]{0,16}$")] = ""
    send_e164: bool = True
    enabled: bool = True


class TrunkUpdate(Patch):
    nullable = frozenset({"username", "secret"})

    name: Name | None = None
    host: Host | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    transport: Literal["udp", "tcp"] | None = None
    source_addresses: list[SourceAddress] | None = None
    username: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    secret: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    codecs: Codecs | None = None
    channel_limit: Annotated[int, Field(ge=1, le=100000)] | None = None
    rate_table: list[Rate] | None = None
    tech_prefix: Annotated[str, Field(pattern=r"^[0-9#*]{0,16}$")] | None = None
    send_e164: bool | None = None
    enabled: bool | None = None


class Trunk(Stored):
    tenant_id: uuid.UUID
    name: str
    auth_mode: str
    host: str
    port: int
    transport: str
    source_addresses: list[str]
    username: str | None
    has_secret: bool
    codecs: list[str]
    channel_limit: int
    rate_table: list[Rate]
    tech_prefix: str
    send_e164: bool
    enabled: bool


# -- numbers ---------------------------------------------------------------------------------
class NumberCreate(Input):
    e164: E164 = Field(examples=["+78123334455"])
    description: Annotated[str, Field(max_length=500)] = ""
    trunk_id: uuid.UUID | None = None
    scenario_id: uuid.UUID | None = None
    enabled: bool = True


class NumberUpdate(Patch):
    nullable = frozenset({"trunk_id", "scenario_id"})

    description: Annotated[str, Field(max_length=500)] | None = None
    trunk_id: uuid.UUID | None = None
    scenario_id: uuid.UUID | None = None
    enabled: bool | None = None


class Number(Stored):
    tenant_id: uuid.UUID
    e164: str
    description: str
    trunk_id: uuid.UUID | None
    scenario_id: uuid.UUID | None
    enabled: bool


# -- tokens and login ------------------------------------------------------------------------
class TokenCreate(Input):
    name: Name
    role: Literal["tenant_admin", "supervisor", "agent"] = "tenant_admin"
    user_id: uuid.UUID | None = None
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class TokenCreated(Output):
    id: uuid.UUID
    name: str
    role: Role
    token: str = Field(description="shown once; only its SHA-256 is stored")
    expires_at: dt.datetime | None


class Login(Input):
    tenant: Annotated[str, Field(pattern=_SLUG)]
    email: Annotated[str, Field(min_length=3, max_length=254)]
    password: Annotated[str, Field(min_length=1, max_length=200)]


class Page(BaseModel):
    """A page of a list; pass `next_cursor` as `cursor` to get the next one."""

    items: list[object]
    next_cursor: str | None


# -- routing configuration -------------------------------------------------------------------
class RoutingConfigPut(Input):
    document: dict[str, object] = Field(
        description="the tenant's routing document (scenarios, directory, schedules, lists, "
        "masks, ring groups, rate tables); routing validates it and lists every problem"
    )


class RoutingConfig(Stored):
    tenant_id: uuid.UUID
    document: dict[str, object]


# -- CDRs and reports ------------------------------------------------------------------------
# Times are in the tenant's time zone; durations in seconds unless the name says otherwise.
class CallDetail(Output):
    """One call (CDR). `outcome` is answered, no_answer, busy, cancelled, rejected, failed,
    abandoned (hung up in a queue) or in_progress."""

    call_id: uuid.UUID
    direction: str
    started_at: dt.datetime | None
    answered_at: dt.datetime | None
    ended_at: dt.datetime | None
    outcome: str
    caller_number: str
    caller_name: str
    callee_number: str
    did: str | None
    caller_extension: str | None
    answered_by_extension: str | None
    answered_by_user_id: uuid.UUID | None
    rang_extensions: list[str]
    ring_seconds: float | None = Field(description="until a person answered, or the whole call")
    talk_seconds: float | None = Field(description="conversation with the person who answered")
    total_seconds: float | None
    post_dial_delay_ms: int | None
    cause: str | None
    sip_status: int | None
    hangup_side: str | None
    queue_id: str | None
    queue_wait_seconds: float | None
    mos: float | None
    trunk_id: uuid.UUID | None
    caller_user_id: uuid.UUID | None


class MissedCall(Output):
    """An outside number whose inbound calls were missed and not answered since."""

    number: str = Field(description="E.164")
    caller_name: str
    missed_calls: int
    first_missed_at: dt.datetime
    last_missed_at: dt.datetime
    last_call_id: uuid.UUID


class LoadFigures(Output):
    calls: int
    inbound: int
    outbound: int
    answered: int = Field(description="answered by them, or placed by them and answered")
    missed: int = Field(description="inbound calls that rang them and nobody answered")
    talk_seconds: float
    average_talk_seconds: float | None


class EmployeeLoad(LoadFigures):
    user_id: uuid.UUID
    name: str
    extension: str
    department_id: uuid.UUID | None


class DepartmentLoad(LoadFigures):
    department_id: uuid.UUID
    name: str


class HourlyLoad(Output):
    hour: int = Field(ge=0, le=23, description="local hour of the day")
    calls: int
    answered: int
    missed: int
    talk_seconds: float


class QueueLoad(Output):
    queue_id: str
    waited: int = Field(description="calls that joined the queue")
    answered: int
    abandoned: int
    left_queue: int = Field(description="left on overflow or by their own choice")
    callbacks: int
    service_level: float | None = Field(
        description="answered within service_level_seconds / waited"
    )
    service_level_seconds: int
    average_wait_seconds: float | None
    longest_wait_seconds: float | None


class Period(Output):
    period_from: dt.datetime
    period_to: dt.datetime


class EmployeeLoadReport(Period):
    items: list[EmployeeLoad]


class DepartmentLoadReport(Period):
    items: list[DepartmentLoad]


class QueueLoadReport(Period):
    items: list[QueueLoad]


class HourlyLoadReport(Period):
    items: list[HourlyLoad]


class CallStats(Period):
    """ASR = answered / attempts; ACD = average talk of answered calls; NER = (answered +
    busy + no_answer + rejected) / attempts. Attempts are the calls of the period that ended."""

    attempts: int
    answered: int
    no_answer: int
    busy: int
    cancelled: int
    rejected: int
    failed: int
    abandoned: int
    asr: float | None
    ner: float | None
    acd_seconds: float | None
    talk_seconds: float
