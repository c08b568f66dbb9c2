"""Structured logs: one line per event, call id and trace id attached from context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from callmesh_core.logging import EventLogger, StructuredFormatter, bind_call_id
from callmesh_core.telemetry import Telemetry
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
def captured() -> Iterator[tuple[EventLogger, io.StringIO, StructuredFormatter]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter = StructuredFormatter(service="routing", replica="routing-0")
    handler.setFormatter(formatter)
    logger = logging.getLogger("callmesh.test.logging")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield EventLogger(logger), stream, formatter
    logger.removeHandler(handler)


def _kv(line: str) -> dict[str, str]:
    """Parse our key=value lines (values may be double-quoted with backslash escapes)."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(line):
        eq = line.index("=", i)
        key = line[i:eq]
        i = eq + 1
        if line[i] == '"':
            i += 1
            value = []
            while line[i] != '"':
                if line[i] == "\\":
                    i += 1
                    value.append({"n": "\n", "t": "\t", "r": "\r"}.get(line[i], line[i]))
                else:
                    value.append(line[i])
                i += 1
            i += 2  # closing quote and space
            fields[key] = "".join(value)
        else:
            end = line.find(" ", i)
            end = len(line) if end == -1 else end
            fields[key] = line[i:end]
            i = end + 1
    return fields


def test_line_carries_call_id_and_trace_id(
    captured: tuple[EventLogger, io.StringIO, StructuredFormatter],
    spans: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    log, stream, _ = captured
    telemetry, _ = spans
    tracer = telemetry.tracer("test")
    with (
        tracer.start_as_current_span("invite") as span,
        bind_call_id("6f1c0a52-1b2c-4d3e-8f90-a1b2c3d4e5f6"),
    ):
        log.info("plan_returned", verbs=3, tenant="acme corp")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    fields = _kv(lines[0])
    assert fields["event"] == "plan_returned"
    assert fields["level"] == "info"
    assert fields["service"] == "routing"
    assert fields["replica"] == "routing-0"
    assert fields["call_id"] == "6f1c0a52-1b2c-4d3e-8f90-a1b2c3d4e5f6"
    assert fields["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert fields["span_id"] == format(span.get_span_context().span_id, "016x")
    assert fields["verbs"] == "3"
    assert fields["tenant"] == "acme corp"


def test_no_ids_outside_a_call_or_span(
    captured: tuple[EventLogger, io.StringIO, StructuredFormatter],
) -> None:
    log, stream, _ = captured
    with bind_call_id("c-1"):
        pass
    log.info("idle")
    fields = _kv(stream.getvalue().strip())
    assert "call_id" not in fields
    assert "trace_id" not in fields


def test_exception_and_newlines_stay_on_one_line(
    captured: tuple[EventLogger, io.StringIO, StructuredFormatter],
) -> None:
    log, stream, _ = captured
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("failed", note='say "hi"\tthere')
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    fields = _kv(lines[0])
    assert fields["level"] == "error"
    assert fields["exc_type"] == "ValueError"
    assert "Traceback" in fields["exc"]
    assert "ValueError: bad\nthing" in fields["exc"]
    assert fields["note"] == 'say "hi"\tthere'


def test_fields_cannot_overwrite_the_envelope(
    captured: tuple[EventLogger, io.StringIO, StructuredFormatter],
) -> None:
    log, stream, _ = captured
    log.warning("odd", level="debug", service="other")
    fields = _kv(stream.getvalue().strip())
    assert fields["level"] == "warning"
    assert fields["service"] == "routing"
    assert fields["field_level"] == "debug"


def test_json_style_is_one_json_object_per_line(
    captured: tuple[EventLogger, io.StringIO, StructuredFormatter],
    spans: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    log, stream, formatter = captured
    formatter.style = "json"
    tracer = spans[0].tracer("test")
    with tracer.start_as_current_span("s") as span, bind_call_id("c-42"):
        log.info("ready", grpc_port=50053, draining=False, raw=b"\x01\x02")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "ready"
    assert record["call_id"] == "c-42"
    assert record["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert record["grpc_port"] == 50053
    assert record["draining"] is False
    assert record["raw"] == "0102"


def test_plain_stdlib_records_are_structured_too(
    captured: tuple[EventLogger, io.StringIO, StructuredFormatter],
) -> None:
    log, stream, _ = captured
    log.logger.warning("legacy %s message", "style")
    fields = _kv(stream.getvalue().strip())
    assert fields["event"] == "legacy style message"
    assert "\x1b" not in stream.getvalue()  # no colour codes
