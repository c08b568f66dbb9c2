"""Settings from `CALLMESH_*` environment variables, validated once at start-up.

Each field of a settings model is read from the variable `CALLMESH_<FIELD NAME IN UPPER CASE>`.
An empty variable counts as unset (Kubernetes manifests often render optional values as empty
strings). A bad or missing value becomes a `SettingsError` whose text is one line naming the
variable, which `load_settings_or_exit` prints to stderr before exiting with status 2, so an
operator sees exactly what to fix instead of a traceback.

Every service subclasses `ServiceSettings`, sets `service_name`, overrides the port defaults
(ARCHITECTURE §6) and adds its own fields.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, NoReturn, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

ENV_PREFIX = "CALLMESH_"
EXIT_BAD_SETTINGS = 2


def _parse_port(value: object) -> int:
    try:
        port = int(str(value).strip())
    except ValueError:
        raise ValueError("not a valid port (integer 1-65535)") from None
    if not 1 <= port <= 65535:
        raise ValueError("not a valid port (integer 1-65535)")
    return port


def _parse_seconds(value: object) -> float:
    try:
        seconds = float(str(value).strip())
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError("not a finite, non-negative number of seconds")
    return seconds


def _parse_log_level(value: object) -> str:
    level = str(value).strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("not a log level (debug, info, warning, error, critical)")
    return level


def _parse_log_format(value: object) -> str:
    text = str(value).strip().lower()
    if text in {"kv", "logfmt", "key=value"}:
        return "kv"
    if text == "json":
        return "json"
    raise ValueError("not a log format (kv or json)")


def _parse_host_port(item: str) -> tuple[str, int]:
    host, sep, port_text = item.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"{item.strip()!r} is not host:port")
    try:
        port = _parse_port(port_text)
    except ValueError:
        raise ValueError(f"{item.strip()!r} has no valid port (integer 1-65535)") from None
    return host, port


def _check_host_port_list(value: str) -> str:
    items = [item for item in value.split(",") if item.strip()]
    if not items:
        raise ValueError("needs at least one host:port")
    for item in items:
        _parse_host_port(item)
    return ",".join(item.strip() for item in items)


def _check_host_port(value: str) -> str:
    _parse_host_port(value)
    return value.strip()


def _check_postgres_dsn(value: str) -> str:
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("not a PostgreSQL URL (postgresql://user@host:port/database)")
    return value


def _check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("not an http:// or https:// URL")
    return value


def _check_not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


Port = Annotated[int, BeforeValidator(_parse_port)]
Seconds = Annotated[float, BeforeValidator(_parse_seconds)]
LogLevel = Annotated[str, BeforeValidator(_parse_log_level)]
LogFormat = Annotated[Literal["kv", "json"], BeforeValidator(_parse_log_format)]
HostPort = Annotated[str, AfterValidator(_check_host_port)]
HostPortList = Annotated[str, AfterValidator(_check_host_port_list)]
PostgresDsn = Annotated[str, AfterValidator(_check_postgres_dsn)]
HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
NonBlank = Annotated[str, AfterValidator(_check_not_blank)]

SECRET: dict[str, Any] = {"secret": True}
"""`json_schema_extra` marker: the value is never echoed back in an error line."""


def _default_replica_id() -> str:
    # In Kubernetes the hostname is the pod name, which is what replica identity means (§5).
    return socket.gethostname()


class ServiceSettings(BaseModel):
    """What every service reads from its environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service_name: ClassVar[str] = "callmesh"

    replica_id: NonBlank = Field(
        default_factory=_default_replica_id, description="replica identity (pod name)"
    )
    log_level: LogLevel = Field(default="INFO", description="debug, info, warning, error")
    log_format: LogFormat = Field(default="kv", description="kv (key=value) or json")
    grpc_host: NonBlank = Field(default="127.0.0.1", description="gRPC listen address")
    grpc_port: Port = Field(description="gRPC listen port")
    http_host: NonBlank = Field(default="127.0.0.1", description="health/metrics listen address")
    http_port: Port = Field(description="health/metrics port (/healthz, /readyz, /metrics)")
    postgres_dsn: PostgresDsn = Field(
        default="postgresql://callmesh@127.0.0.1:55432/callmesh",
        description="PostgreSQL URL",
        json_schema_extra=SECRET,
    )
    kafka_bootstrap_servers: HostPortList = Field(
        default="127.0.0.1:19092", description="comma-separated Kafka host:port list"
    )
    otlp_endpoint: HttpUrl | None = Field(
        default=None, description="OTLP/gRPC collector URL; unset means no export"
    )
    drain_grace_seconds: Seconds = Field(
        default=30.0, description="how long SIGTERM waits for in-flight work to finish"
    )
    grpc_stop_grace_seconds: Seconds = Field(
        default=5.0, description="how long in-flight RPCs get once draining is over"
    )
    grpc_max_receive_mb: Annotated[int, Field(ge=1, le=2047)] = Field(
        default=4, description="largest gRPC message this service accepts, in MiB"
    )
    grpc_client_timeout_seconds: Seconds = Field(
        default=2.0, description="default deadline of outgoing gRPC calls"
    )


class SettingsError(Exception):
    """A setting is bad or missing; `str()` is the one line to show the operator."""


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def env_var_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _program_name(settings_type: type[ServiceSettings]) -> str:
    return "callmesh-" + settings_type.service_name.replace("_", "-")


def _is_secret(settings_type: type[ServiceSettings], field_name: str) -> bool:
    field = settings_type.model_fields.get(field_name)
    extra = field.json_schema_extra if field is not None else None
    return isinstance(extra, dict) and bool(extra.get("secret"))


def load_settings(
    settings_type: type[SettingsT], environ: Mapping[str, str] | None = None
) -> SettingsT:
    """Build `settings_type` from `environ` (default: the process environment).

    Raises `SettingsError` whose message is a single line naming the first bad variable.
    """
    env = dict(environ) if environ is not None else dict(os.environ)
    raw: dict[str, str] = {}
    for field_name in settings_type.model_fields:
        value = env.get(env_var_name(field_name))
        if value is not None and value != "":
            raw[field_name] = value
    try:
        return settings_type.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(_describe_first_error(settings_type, exc, raw)) from None


def _describe_first_error(
    settings_type: type[ServiceSettings], exc: ValidationError, raw: Mapping[str, str]
) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    program = _program_name(settings_type)
    reason = _reason(first)
    loc = first.get("loc", ())
    if not loc:
        return f"{program}: {reason}{more}"
    field_name = str(loc[0])
    variable = env_var_name(field_name)
    if first["type"] == "missing":
        return f"{program}: {variable} is required but not set{more}"
    if field_name in raw:
        shown = "<hidden>" if _is_secret(settings_type, field_name) else repr(raw[field_name])
        return f"{program}: {variable}={shown}: {reason}{more}"
    return f"{program}: {variable}: {reason}{more}"


def _reason(error: Mapping[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    if error["type"] in {"value_error", "assertion_error"} and "error" in ctx:
        text = str(ctx["error"])
    else:
        text = str(error["msg"])
    text = " ".join(text.split())  # keep it on one line whatever the message
    # "Input should be ..." reads better mid-line as "input should be ..."; leave names alone.
    if text[:2].istitle():
        return text[:1].lower() + text[1:]
    return text


def load_settings_or_exit(
    settings_type: type[SettingsT], environ: Mapping[str, str] | None = None
) -> SettingsT:
    """`load_settings`, but a bad setting prints one stderr line and exits with status 2."""
    try:
        return load_settings(settings_type, environ)
    except SettingsError as exc:
        _exit_with_line(str(exc))


def _exit_with_line(line: str) -> NoReturn:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_BAD_SETTINGS)


def describe_variables(settings_type: type[ServiceSettings]) -> list[tuple[str, str, str]]:
    """(variable, default, description) rows, for READMEs and `--help`-like output."""
    rows: list[tuple[str, str, str]] = []
    for field_name, field in settings_type.model_fields.items():
        if field.default_factory is not None:
            default = "(computed)"
        elif field.is_required():
            default = "(required)"
        else:
            default = "" if field.default is None else str(field.default)
        rows.append((env_var_name(field_name), default, field.description or ""))
    return rows
