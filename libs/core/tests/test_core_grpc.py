"""A real grpc.aio server on port 0: health, deadlines, error mapping, tracing, streams."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from callmesh_core.errors import NotFound
from callmesh_core.grpc_server import GrpcServer, create_channel
from callmesh_core.logging import EventLogger
from callmesh_core.telemetry import Telemetry
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

SERVICE = "callmesh.test.v1.Echo"


class EchoServicer:
    """Stands in for a generated servicer: the interceptors only see method handlers."""

    async def Echo(self, request: StringValue, context: Any) -> StringValue:
        return StringValue(value=request.value)

    async def Slow(self, request: StringValue, context: Any) -> StringValue:
        await asyncio.sleep(5)
        return StringValue(value="late")

    async def Missing(self, request: StringValue, context: Any) -> StringValue:
        raise NotFound(f"no extension {request.value}")

    async def Broken(self, request: StringValue, context: Any) -> StringValue:
        raise RuntimeError("secret internal detail")

    async def Count(self, request: StringValue, context: Any) -> AsyncIterator[StringValue]:
        for i in range(int(request.value)):
            yield StringValue(value=str(i))

    async def CountThenMissing(
        self, request: StringValue, context: Any
    ) -> AsyncIterator[StringValue]:
        yield StringValue(value="0")
        raise NotFound("gone midway")


def register_echo(servicer: EchoServicer, server: grpc.aio.Server) -> None:
    def unary(method: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            method,
            request_deserializer=StringValue.FromString,
            response_serializer=StringValue.SerializeToString,
        )

    def stream(method: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_stream_rpc_method_handler(
            method,
            request_deserializer=StringValue.FromString,
            response_serializer=StringValue.SerializeToString,
        )

    handlers = {
        "Echo": unary(servicer.Echo),
        "Slow": unary(servicer.Slow),
        "Missing": unary(servicer.Missing),
        "Broken": unary(servicer.Broken),
        "Count": stream(servicer.Count),
        "CountThenMissing": stream(servicer.CountThenMissing),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def _unary(channel: grpc.aio.Channel, name: str) -> Any:
    return channel.unary_unary(
        f"/{SERVICE}/{name}",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )


def _stream(channel: grpc.aio.Channel, name: str) -> Any:
    return channel.unary_stream(
        f"/{SERVICE}/{name}",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def server(
    spans: tuple[Telemetry, InMemorySpanExporter], registry: CollectorRegistry
) -> AsyncIterator[GrpcServer]:
    telemetry, _ = spans
    grpc_server = GrpcServer(
        host="127.0.0.1",
        port=0,
        tracer=telemetry.tracer("server"),
        log=EventLogger(logging.getLogger("callmesh.test.grpc")),
        metrics=registry,
        metric_prefix="callmesh_test",
    )
    grpc_server.add(register_echo, EchoServicer(), SERVICE)
    await grpc_server.start()
    yield grpc_server
    await grpc_server.stop(0)


@pytest.fixture
async def channel(
    server: GrpcServer, spans: tuple[Telemetry, InMemorySpanExporter]
) -> AsyncIterator[grpc.aio.Channel]:
    channel = create_channel(
        f"127.0.0.1:{server.port}", tracer=spans[0].tracer("client"), default_timeout=0.5
    )
    yield channel
    await channel.close()


async def test_health_is_serving_then_not_serving(
    server: GrpcServer, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    per_service = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert per_service.status == health_pb2.HealthCheckResponse.SERVING

    await server.set_serving(False)
    overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert overall.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: set[str] = set()
    async for response in stub.ServerReflectionInfo(requests()):
        names |= {s.name for s in response.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_call_past_explicit_deadline_fails_cleanly(channel: grpc.aio.Channel) -> None:
    began = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel, "Slow")(StringValue(value="x"), timeout=0.2)
    elapsed = time.monotonic() - began
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.15 < elapsed < 1.0
    # The channel is still usable afterwards.
    assert (await _unary(channel, "Echo")(StringValue(value="ok"))).value == "ok"


async def test_call_without_timeout_gets_the_default_deadline(channel: grpc.aio.Channel) -> None:
    began = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel, "Slow")(StringValue(value="x"))
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.4 < time.monotonic() - began < 1.5  # default_timeout=0.5, not the servicer's 5 s


async def test_domain_error_becomes_its_status(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel, "Missing")(StringValue(value="105"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no extension 105"


async def test_unexpected_error_is_internal_without_details(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel, "Broken")(StringValue(value=""))
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert "secret" not in (caught.value.details() or "")


async def test_streams_pass_through_interceptors(channel: grpc.aio.Channel) -> None:
    values = [r.value async for r in _stream(channel, "Count")(StringValue(value="3"))]
    assert values == ["0", "1", "2"]
    call = _stream(channel, "CountThenMissing")(StringValue(value=""))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for response in call:
            received.append(response.value)
    assert received == ["0"]
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_server_span_is_child_of_client_span(
    channel: grpc.aio.Channel, spans: tuple[Telemetry, InMemorySpanExporter]
) -> None:
    telemetry, exporter = spans
    with telemetry.tracer("caller").start_as_current_span("call-root") as root:
        await _unary(channel, "Echo")(StringValue(value="hi"))
        with pytest.raises(grpc.aio.AioRpcError):
            await _unary(channel, "Missing")(StringValue(value="1"))
    # A server span ends just after its response is on the wire, so under load the client can
    # have its answer first: wait (briefly) for both server spans to finish.
    for _ in range(200):
        finished = exporter.get_finished_spans()
        if len([s for s in finished if s.kind is SpanKind.SERVER]) >= 2:
            break
        await asyncio.sleep(0.01)
    trace_id = root.get_span_context().trace_id
    echo_client = next(
        s for s in finished if s.kind is SpanKind.CLIENT and s.name == f"{SERVICE}/Echo"
    )
    echo_server = next(
        s for s in finished if s.kind is SpanKind.SERVER and s.name == f"{SERVICE}/Echo"
    )
    assert echo_client.context.trace_id == trace_id
    assert echo_client.parent is not None
    assert echo_client.parent.span_id == root.get_span_context().span_id
    assert echo_server.context.trace_id == trace_id
    assert echo_server.parent is not None
    assert echo_server.parent.span_id == echo_client.context.span_id
    assert echo_server.attributes is not None
    assert echo_server.attributes["rpc.grpc.status_code"] == 0
    missing_server = next(
        s for s in finished if s.kind is SpanKind.SERVER and s.name == f"{SERVICE}/Missing"
    )
    assert missing_server.attributes is not None
    assert missing_server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    # Health checks are not traced (probes would drown real spans).
    assert not [s for s in finished if "Health" in s.name]


async def test_second_server_on_the_same_port_fails_to_start(
    server: GrpcServer, spans: tuple[Telemetry, InMemorySpanExporter]
) -> None:
    assert server.port is not None
    other = GrpcServer(
        host="127.0.0.1",
        port=server.port,
        tracer=spans[0].tracer("server"),
        log=EventLogger(logging.getLogger("callmesh.test.grpc")),
    )
    with pytest.raises(RuntimeError):
        await other.start()
    await other.stop(0)


async def test_rpcs_are_counted_by_status_and_timed(
    channel: grpc.aio.Channel, registry: CollectorRegistry
) -> None:
    for _ in range(2):
        await _unary(channel, "Echo")(StringValue(value="x"))
    with pytest.raises(grpc.aio.AioRpcError):
        await _unary(channel, "Missing")(StringValue(value="1"))
    with pytest.raises(grpc.aio.AioRpcError):
        await _unary(channel, "Slow")(StringValue(value="x"), timeout=0.1)
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())

    def handled(method: str, code: str) -> float | None:
        return registry.get_sample_value(
            "callmesh_test_grpc_server_handled_total",
            {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code},
        )

    assert handled("Echo", "OK") == 2
    assert handled("Missing", "NOT_FOUND") == 1
    deadline = asyncio.get_running_loop().time() + 2
    while handled("Slow", "CANCELLED") is None:  # the server sees the expired call cancelled
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert (
        registry.get_sample_value(
            "callmesh_test_grpc_server_handling_seconds_count",
            {"grpc_service": SERVICE, "grpc_method": "Echo"},
        )
        == 2
    )
    health_samples = [
        sample
        for metric in registry.collect()
        for sample in metric.samples
        if "Health" in sample.labels.get("grpc_service", "")
    ]
    assert health_samples == []
