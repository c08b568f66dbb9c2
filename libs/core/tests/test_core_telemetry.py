"""W3C trace context through gRPC metadata and Kafka headers."""

from __future__ import annotations

import grpc
from callmesh_core.telemetry import (
    Telemetry,
    extract_grpc_metadata,
    extract_kafka_headers,
    inject_grpc_metadata,
    inject_kafka_headers,
)
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def test_grpc_metadata_round_trip(spans: tuple[Telemetry, InMemorySpanExporter]) -> None:
    tracer = spans[0].tracer("test")
    with tracer.start_as_current_span("client") as span:
        metadata = inject_grpc_metadata([("x-tenant", "acme")])
    sent = span.get_span_context()
    assert ("x-tenant", "acme") in metadata
    traceparent = str(dict(metadata)["traceparent"])
    assert traceparent.startswith(f"00-{sent.trace_id:032x}-{sent.span_id:016x}-")

    received = trace.get_current_span(extract_grpc_metadata(metadata)).get_span_context()
    assert received.is_remote
    assert (received.trace_id, received.span_id) == (sent.trace_id, sent.span_id)

    with tracer.start_as_current_span("server", context=extract_grpc_metadata(metadata)):
        pass
    server_span = next(s for s in spans[1].get_finished_spans() if s.name == "server")
    assert server_span.context.trace_id == sent.trace_id
    assert server_span.parent is not None and server_span.parent.span_id == sent.span_id


def test_kafka_headers_round_trip_as_bytes(spans: tuple[Telemetry, InMemorySpanExporter]) -> None:
    tracer = spans[0].tracer("test")
    with tracer.start_as_current_span("publish") as span:
        headers = inject_kafka_headers([("callmesh-event-id", b"e-1")])
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
    assert ("callmesh-event-id", b"e-1") in headers
    received = trace.get_current_span(extract_kafka_headers(headers)).get_span_context()
    sent = span.get_span_context()
    assert (received.trace_id, received.span_id) == (sent.trace_id, sent.span_id)


def test_reinjection_replaces_old_trace_context(
    spans: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    tracer = spans[0].tracer("test")
    with tracer.start_as_current_span("first"):
        first = inject_kafka_headers()
    with tracer.start_as_current_span("second") as second:
        again = inject_kafka_headers(first)
    assert [k for k, _ in again].count("traceparent") == 1
    received = trace.get_current_span(extract_kafka_headers(again)).get_span_context()
    assert received.span_id == second.get_span_context().span_id


def test_nothing_injected_without_a_span() -> None:
    assert inject_grpc_metadata() == []
    assert inject_kafka_headers() == []
    context = extract_kafka_headers([("traceparent", b"garbage")])
    assert not trace.get_current_span(context).get_span_context().is_valid


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """The smallest OTLP/gRPC trace collector: remembers what it was sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_spans_are_exported_over_otlp_when_an_endpoint_is_set() -> None:
    collector = _Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        telemetry = Telemetry(
            service_name="routing",
            replica_id="routing-1",
            otlp_endpoint=f"http://127.0.0.1:{port}",
        )
        assert telemetry.exporting
        with telemetry.tracer("test").start_as_current_span("plan") as span:
            span.set_attribute("callmesh.call.id", "c-1")
        await telemetry.shutdown()  # flushes the batch processor
    finally:
        await server.stop(0)
    exported = [
        (resource_spans.resource, exported_span)
        for request in collector.requests
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for exported_span in scope_spans.spans
    ]
    assert len(exported) == 1
    resource, exported_span = exported[0]
    attributes = {a.key: a.value.string_value for a in resource.attributes}
    assert attributes["service.name"] == "callmesh-routing"
    assert attributes["service.instance.id"] == "routing-1"
    assert exported_span.name == "plan"
    assert exported_span.trace_id == span.get_span_context().trace_id.to_bytes(16, "big")


def test_no_exporter_without_an_endpoint() -> None:
    telemetry = Telemetry(service_name="routing", replica_id="r")
    assert not telemetry.exporting
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()
