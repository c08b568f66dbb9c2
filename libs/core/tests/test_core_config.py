"""Settings: defaults, parsing, and the one-line error that names the bad variable."""

from __future__ import annotations

from typing import ClassVar

import pytest
from callmesh_core.config import (
    EXIT_BAD_SETTINGS,
    Port,
    ServiceSettings,
    SettingsError,
    describe_variables,
    load_settings,
    load_settings_or_exit,
)
from pydantic import Field, model_validator


class DemoSettings(ServiceSettings):
    service_name: ClassVar[str] = "demo"
    grpc_port: Port = Field(default=50099)
    http_port: Port = Field(default=9199)
    low: Port = Field(default=100)
    high: Port = Field(default=200)

    @model_validator(mode="after")
    def _ordered(self) -> DemoSettings:
        if self.low > self.high:
            raise ValueError(f"CALLMESH_LOW={self.low} is above CALLMESH_HIGH={self.high}")
        return self


def _error(environ: dict[str, str], settings_type: type[ServiceSettings] = DemoSettings) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(settings_type, environ)
    return str(caught.value)


def test_defaults_apply_when_nothing_is_set() -> None:
    settings = load_settings(DemoSettings, {})
    assert settings.grpc_port == 50099
    assert settings.http_port == 9199
    assert settings.postgres_dsn == "postgresql://callmesh@127.0.0.1:55432/callmesh"
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.otlp_endpoint is None
    assert settings.log_format == "kv"
    assert settings.replica_id  # the host name


def test_values_are_parsed_from_their_variables() -> None:
    settings = load_settings(
        DemoSettings,
        {
            "CALLMESH_GRPC_PORT": "6000",
            "CALLMESH_LOG_LEVEL": "debug",
            "CALLMESH_LOG_FORMAT": "json",
            "CALLMESH_KAFKA_BOOTSTRAP_SERVERS": "a:1, b:2",
            "CALLMESH_DRAIN_GRACE_SECONDS": "2.5",
            "CALLMESH_REPLICA_ID": "routing-7f9c",
            "CALLMESH_OTLP_ENDPOINT": "http://collector:4317",
            "UNRELATED": "x",
        },
    )
    assert settings.grpc_port == 6000
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"
    assert settings.kafka_bootstrap_servers == "a:1,b:2"
    assert settings.drain_grace_seconds == 2.5
    assert settings.replica_id == "routing-7f9c"
    assert settings.otlp_endpoint == "http://collector:4317"


def test_empty_variable_counts_as_unset() -> None:
    assert load_settings(DemoSettings, {"CALLMESH_GRPC_PORT": ""}).grpc_port == 50099


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"CALLMESH_GRPC_PORT": "abc"},
            "callmesh-demo: CALLMESH_GRPC_PORT='abc': not a valid port (integer 1-65535)",
        ),
        (
            {"CALLMESH_HTTP_PORT": "70000"},
            "callmesh-demo: CALLMESH_HTTP_PORT='70000': not a valid port (integer 1-65535)",
        ),
        (
            {"CALLMESH_LOG_FORMAT": "xml"},
            "callmesh-demo: CALLMESH_LOG_FORMAT='xml': not a log format (kv or json)",
        ),
        (
            {"CALLMESH_KAFKA_BOOTSTRAP_SERVERS": "broker"},
            "callmesh-demo: CALLMESH_KAFKA_BOOTSTRAP_SERVERS='broker': 'broker' is not host:port",
        ),
        (
            {"CALLMESH_DRAIN_GRACE_SECONDS": "-1"},
            "callmesh-demo: CALLMESH_DRAIN_GRACE_SECONDS='-1': "
            "not a finite, non-negative number of seconds",
        ),
        (
            {"CALLMESH_LOW": "300"},
            "callmesh-demo: CALLMESH_LOW=300 is above CALLMESH_HIGH=200",
        ),
    ],
)
def test_bad_value_gives_one_line_naming_the_variable(
    environ: dict[str, str], expected: str
) -> None:
    assert _error(environ) == expected


def test_secret_values_are_not_echoed() -> None:
    line = _error({"CALLMESH_POSTGRES_DSN": "mysql://admin:hunter2@db/x"})
    assert line.startswith("callmesh-demo: CALLMESH_POSTGRES_DSN=<hidden>: not a PostgreSQL URL")
    assert "hunter2" not in line


def test_missing_required_variable_is_named() -> None:
    class NoDefaults(ServiceSettings):
        service_name: ClassVar[str] = "bare"

    line = _error({"CALLMESH_HTTP_PORT": "9000"}, NoDefaults)
    assert line == "callmesh-bare: CALLMESH_GRPC_PORT is required but not set"


def test_several_errors_still_make_one_line() -> None:
    line = _error({"CALLMESH_GRPC_PORT": "x", "CALLMESH_HTTP_PORT": "y"})
    assert "\n" not in line
    assert line.startswith("callmesh-demo: CALLMESH_GRPC_PORT='x'")
    assert line.endswith("(and 1 more)")


def test_exit_prints_exactly_one_stderr_line_and_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        load_settings_or_exit(DemoSettings, {"CALLMESH_GRPC_PORT": "abc"})
    assert caught.value.code == EXIT_BAD_SETTINGS
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "callmesh-demo: CALLMESH_GRPC_PORT='abc': not a valid port (integer 1-65535)"
    ]


def test_variables_are_listed_with_defaults() -> None:
    rows = {name: default for name, default, _ in describe_variables(DemoSettings)}
    assert rows["CALLMESH_GRPC_PORT"] == "50099"
    assert rows["CALLMESH_REPLICA_ID"] == "(computed)"
    assert rows["CALLMESH_OTLP_ENDPOINT"] == ""
