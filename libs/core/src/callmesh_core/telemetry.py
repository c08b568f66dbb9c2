"""OpenTelemetry for a service: providers, W3C trace-context carriers, gRPC interceptors.

The providers are built per service and handed around explicitly (no global provider is
installed), so tests can build as many as they like. Logging finds the current span through the
OpenTelemetry context, which is a contextvar and needs no provider.

Trace context crosses process boundaries as W3C `traceparent`/`tracestate`:
- gRPC: metadata keys (ASCII values);
- Kafka: record headers, a list of `(str, bytes)` tuples as aiokafka uses them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from callmesh_core._rpc import is_infrastructure_method, split_method, status_of, wrap_handler

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset(_PROPAGATOR.fields)


EXPORT_TIMEOUT_SECONDS = 3.0


class Telemetry:
    """A service's tracer and meter providers; exporters only when an endpoint is configured."""

    def __init__(
        self,
        *,
        service_name: str,
        replica_id: str,
        otlp_endpoint: str | None = None,
        span_processors: Sequence[SpanProcessor] = (),
        metric_readers: Sequence[MetricReader] = (),
    ) -> None:
        resource = Resource.create(
            {"service.name": f"callmesh-{service_name}", "service.instance.id": replica_id}
        )
        self.tracer_provider = TracerProvider(resource=resource)
        readers: list[MetricReader] = list(metric_readers)
        if otlp_endpoint:
            # Imported lazily: the exporter pulls in a gRPC channel and is only needed when used.
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            insecure = otlp_endpoint.startswith("http://")
            # A short export timeout: an unreachable collector must not hold up shutdown long.
            self.tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    OTLPSpanExporter(
                        endpoint=otlp_endpoint, insecure=insecure, timeout=EXPORT_TIMEOUT_SECONDS
                    )
                )
            )
            readers.append(
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(
                        endpoint=otlp_endpoint, insecure=insecure, timeout=EXPORT_TIMEOUT_SECONDS
                    )
                )
            )
        for processor in span_processors:
            self.tracer_provider.add_span_processor(processor)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self.exporting = bool(otlp_endpoint)

    def tracer(self, name: str) -> Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> Meter:
        return self.meter_provider.get_meter(name)

    async def shutdown(self) -> None:
        """Flush and stop exporters (in a thread: exporting blocks on the network)."""
        await asyncio.to_thread(self._shutdown_blocking)

    def _shutdown_blocking(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


# --- carriers -------------------------------------------------------------------------------

MetadataPairs = Sequence[tuple[str, str | bytes]]
KafkaHeaders = list[tuple[str, bytes]]


class _PairsGetter(Getter[Sequence[tuple[str, Any]]]):
    def get(self, carrier: Sequence[tuple[str, Any]], key: str) -> list[str] | None:
        values = [
            value.decode("latin-1") if isinstance(value, bytes) else str(value)
            for name, value in carrier
            if name.lower() == key
        ]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, Any]]) -> list[str]:
        return [name for name, _ in carrier]


class _TextPairsSetter(Setter[list[tuple[str, str]]]):
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


_GETTER = _PairsGetter()
_SETTER = _TextPairsSetter()


def _trace_pairs(context: Context | None) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    _PROPAGATOR.inject(pairs, context=context, setter=_SETTER)
    return pairs


def inject_grpc_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None = None, context: Context | None = None
) -> list[tuple[str, str | bytes]]:
    """`metadata` plus W3C trace context of `context` (default: the current one).

    Existing trace keys are replaced, so re-injecting never sends two `traceparent` values.
    """
    kept = [(k, v) for k, v in (metadata or ()) if k.lower() not in _TRACE_HEADERS]
    return kept + list(_trace_pairs(context))


def extract_grpc_metadata(metadata: Iterable[tuple[str, Any]] | None) -> Context:
    """The remote parent context carried by incoming gRPC metadata (empty if none)."""
    return _PROPAGATOR.extract(list(metadata or ()), getter=_GETTER)


def inject_kafka_headers(
    headers: Iterable[tuple[str, bytes]] | None = None, context: Context | None = None
) -> KafkaHeaders:
    """Kafka record headers plus W3C trace context of `context` (default: the current one)."""
    kept = [(k, v) for k, v in (headers or ()) if k.lower() not in _TRACE_HEADERS]
    return kept + [(k, v.encode("ascii")) for k, v in _trace_pairs(context)]


def extract_kafka_headers(headers: Sequence[tuple[str, bytes]] | None) -> Context:
    """The remote parent context carried by Kafka record headers (empty if none)."""
    return _PROPAGATOR.extract(list(headers or ()), getter=_GETTER)


# --- gRPC interceptors ----------------------------------------------------------------------


def _rpc_attributes(full_method: str) -> dict[str, str]:
    service, method = split_method(full_method)
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _finish_server_span(
    span: Span, context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None
) -> None:
    status_code = status_of(context, error)
    if status_code is grpc.StatusCode.UNKNOWN and error is not None:
        span.record_exception(error)
    span.set_attribute("rpc.grpc.status_code", status_code.value[0])
    if status_code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, status_code.name))


class TracingServerInterceptor(grpc.aio.ServerInterceptor):
    """Starts a SERVER span per RPC as a child of the caller's trace context."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        full_method: str = handler_call_details.method
        if handler is None or is_infrastructure_method(full_method):
            return handler
        tracer = self.tracer
        attributes = _rpc_attributes(full_method)
        span_name = full_method.lstrip("/")

        async def around(
            invoke: Callable[[], Awaitable[Any]], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            parent = extract_grpc_metadata(context.invocation_metadata())
            with tracer.start_as_current_span(
                span_name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    result = await invoke()
                except BaseException as exc:
                    _finish_server_span(span, context, exc)
                    raise
                _finish_server_span(span, context, None)
                return result

        async def around_stream(
            invoke: Callable[[], AsyncIterator[Any]], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            parent = extract_grpc_metadata(context.invocation_metadata())
            with tracer.start_as_current_span(
                span_name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    async for response in invoke():
                        yield response
                except BaseException as exc:
                    _finish_server_span(span, context, exc)
                    raise
                _finish_server_span(span, context, None)

        return wrap_handler(handler, around, around_stream)


def _method_name(method: object) -> str:
    # grpc.aio passes the method as bytes today; accept str too rather than crash on a change.
    return method.decode() if isinstance(method, bytes) else str(method)


class ClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Gives every outgoing call a deadline, a CLIENT span and W3C trace metadata.

    A call made without `timeout=` gets `default_timeout` seconds: §3 wants a deadline on every
    call, and forgetting one is the usual way a PBX hangs a caller in silence.
    """

    def __init__(self, tracer: Tracer, default_timeout: float) -> None:
        self.tracer = tracer
        self.default_timeout = default_timeout

    def _prepare(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[grpc.aio.ClientCallDetails, Span]:
        method = _method_name(details.method)
        span = self.tracer.start_span(
            method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(method)
        )
        metadata = inject_grpc_metadata(
            list(details.metadata or ()), context=trace.set_span_in_context(span)
        )
        timeout = details.timeout if details.timeout is not None else self.default_timeout
        new_details = grpc.aio.ClientCallDetails(
            details.method,
            timeout,
            grpc.aio.Metadata(*metadata),
            details.credentials,
            details.wait_for_ready,
        )
        return new_details, span

    @staticmethod
    def _end_span_on_done(call: Any, span: Span) -> None:
        def on_done(_: Any) -> None:
            span.end()

        call.add_done_callback(on_done)

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        details, span = self._prepare(client_call_details)
        try:
            call = await continuation(details, request)
            # Awaiting here (rather than returning the call) lets the span see the status code.
            response = await call
        except grpc.aio.AioRpcError as exc:
            span.set_attribute("rpc.grpc.status_code", exc.code().value[0])
            span.set_status(Status(StatusCode.ERROR, exc.code().name))
            span.end()
            raise
        except BaseException:
            span.end()
            raise
        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
        span.end()
        return response

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        details, span = self._prepare(client_call_details)
        call = await continuation(details, request)
        self._end_span_on_done(call, span)
        return call

    async def intercept_stream_unary(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        details, span = self._prepare(client_call_details)
        call = await continuation(details, request_iterator)
        self._end_span_on_done(call, span)
        return call

    async def intercept_stream_stream(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        details, span = self._prepare(client_call_details)
        call = await continuation(details, request_iterator)
        self._end_span_on_done(call, span)
        return call
