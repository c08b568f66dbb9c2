"""Structured, colour-free logs: one line per event, key=value (default) or JSON.

Every line carries the service, the replica, and — when known — the call id (from a context
variable bound with `bind_call_id`) and the trace/span ids of the current OpenTelemetry span, so
a line can be joined to its trace without the caller passing ids around.

Usage::

    log = EventLogger(logging.getLogger("callmesh.routing"))
    with bind_call_id(call_id):
        log.info("plan_returned", verbs=3)
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
import traceback
from collections.abc import Iterator, Mapping
from typing import Any, Literal, TextIO

from opentelemetry import trace

FIELDS_ATTR = "callmesh_fields"
"""Attribute name on `logging.LogRecord` under which `EventLogger` stores its fields."""


# A ContextVar is declared once per process by design: the *value* is per asyncio task (and
# inherited by the tasks it starts), so this is not shared mutable state.
_CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "callmesh_call_id", default=None
)

_ENVELOPE = frozenset({"ts", "level", "service", "replica", "logger", "event"})


@contextlib.contextmanager
def bind_call_id(call_id: str | None) -> Iterator[None]:
    """Within the block (and tasks started in it) log lines carry `call_id`."""
    token = _CALL_ID.set(call_id)
    try:
        yield
    finally:
        _CALL_ID.reset(token)


def current_call_id() -> str | None:
    return _CALL_ID.get()


class EventLogger:
    """A thin wrapper over `logging.Logger` for `event name + fields` logging."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def child(self, suffix: str) -> EventLogger:
        return EventLogger(self.logger.getChild(suffix))

    def _log(self, level: int, event: str, exc_info: bool, fields: Mapping[str, Any]) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(
                level, event, exc_info=exc_info, extra={FIELDS_ATTR: dict(fields)}, stacklevel=3
            )

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, False, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, False, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, False, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, False, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Like `error`, plus the active exception, on the same single line."""
        self._log(logging.ERROR, event, True, fields)


def _utc_timestamp(created: float) -> str:
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _kv_value(value: Any) -> str:
    text = value if isinstance(value, str) else _plain(value)
    if text and not any(ch in text for ch in ' ="\\\n\r\t') and text.isprintable():
        return text
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


class StructuredFormatter(logging.Formatter):
    """Formats records from `EventLogger` and from plain `logging` calls alike."""

    def __init__(
        self,
        *,
        service: str,
        replica: str,
        style: Literal["kv", "json"] = "kv",
    ) -> None:
        super().__init__()
        self.service = service
        self.replica = replica
        self.style = style

    def fields_of(self, record: logging.LogRecord) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "ts": _utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "service": self.service,
            "replica": self.replica,
            "logger": record.name,
            "event": record.getMessage(),
        }
        call_id = _CALL_ID.get()
        if call_id is not None:
            fields["call_id"] = call_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            fields["trace_id"] = format(span_context.trace_id, "032x")
            fields["span_id"] = format(span_context.span_id, "016x")
        extra = getattr(record, FIELDS_ATTR, None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                # Event fields never overwrite the envelope (a field named `level` would lie).
                fields[f"field_{key}" if key in _ENVELOPE else key] = value
        if record.exc_info and record.exc_info[0] is not None:
            fields["exc_type"] = record.exc_info[0].__name__
            fields["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return fields

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields_of(record)
        if self.style == "json":
            return json.dumps(
                {key: _json_safe(value) for key, value in fields.items()},
                ensure_ascii=False,
                separators=(",", ":"),
            )
        return " ".join(f"{key}={_kv_value(value)}" for key, value in fields.items())


def configure_logging(
    *,
    service: str,
    replica: str,
    level: str = "INFO",
    style: Literal["kv", "json"] = "kv",
    stream: TextIO | None = None,
) -> EventLogger:
    """Route every `logging` record of the process through one structured handler.

    Called once by the service runner (logging configuration is process-wide by nature).
    Returns the service's own logger, `callmesh.<service>`.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(StructuredFormatter(service=service, replica=replica, style=style))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries are noisy at INFO (aiokafka logs every rebalance step); keep them at WARNING
    # unless the operator asked for DEBUG.
    library_level = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("aiokafka", "kafka", "asyncio", "grpc", "aiohttp.access"):
        logging.getLogger(name).setLevel(library_level)
    logging.captureWarnings(True)
    return EventLogger(logging.getLogger(f"callmesh.{service}"))
