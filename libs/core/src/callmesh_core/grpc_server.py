"""gRPC plumbing: the server every service runs and the channels it uses to call others.

`GrpcServer` is a grpc.aio server with `grpc.health.v1.Health`, reflection, tracing and the
domain-error interceptor already installed; the service adds its servicers before `start()`.
`create_channel` makes client channels whose calls always carry a deadline and trace context.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry, Counter, Histogram

from callmesh_core._rpc import is_infrastructure_method, split_method, status_of, wrap_handler
from callmesh_core.errors import DomainError
from callmesh_core.logging import EventLogger
from callmesh_core.telemetry import ClientInterceptor, TracingServerInterceptor

HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns `DomainError`s into their status codes and anything else into INTERNAL.

    Unexpected exceptions are logged with their traceback here (the trace id comes with the log
    line) and the caller gets a generic message, so internals never leak over the wire.
    """

    def __init__(self, log: EventLogger) -> None:
        self.log = log

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        log = self.log

        async def abort_for(exc: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if isinstance(exc, DomainError):
                await context.abort(exc.status_code, exc.message)
            log.exception("rpc_failed", method=method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        async def around(
            invoke: Callable[[], Awaitable[Any]], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            try:
                return await invoke()
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort_for(exc, context)
                raise  # unreachable: abort raises

        async def around_stream(
            invoke: Callable[[], AsyncIterator[Any]], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                async for response in invoke():
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort_for(exc, context)
                raise

        return wrap_handler(handler, around, around_stream)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts RPCs by final status and times them, into the service's Prometheus registry.

    `<prefix>_grpc_server_handled_total{grpc_service,grpc_method,grpc_code}` and
    `<prefix>_grpc_server_handling_seconds{grpc_service,grpc_method}` (docs/observability.md).
    """

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.handled = Counter(
            f"{prefix}_grpc_server_handled",
            "RPCs completed on the server, by final status",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=registry,
        )
        self.seconds = Histogram(
            f"{prefix}_grpc_server_handling_seconds",
            "time from RPC start to its final status",
            ["grpc_service", "grpc_method"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

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
        service, method = split_method(full_method)
        handled, seconds = self.handled, self.seconds.labels(service, method)

        def record(
            context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None, began: float
        ) -> None:
            seconds.observe(time.perf_counter() - began)
            handled.labels(service, method, status_of(context, error).name).inc()

        async def around(
            invoke: Callable[[], Awaitable[Any]], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            began = time.perf_counter()
            try:
                result = await invoke()
            except BaseException as exc:
                record(context, exc, began)
                raise
            record(context, None, began)
            return result

        async def around_stream(
            invoke: Callable[[], AsyncIterator[Any]], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            began = time.perf_counter()
            try:
                async for response in invoke():
                    yield response
            except BaseException as exc:
                record(context, exc, began)
                raise
            record(context, None, began)

        return wrap_handler(handler, around, around_stream)


class GrpcServer:
    """A grpc.aio server with health, reflection, tracing and error mapping.

    Usage: construct, `add(...)` servicers, `await start()`, later `await stop(grace)`.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tracer: Tracer,
        log: EventLogger,
        metrics: CollectorRegistry | None = None,
        metric_prefix: str = "callmesh",
        extra_interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
        max_receive_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.log = log
        # Order matters: tracing and metrics sit outside error mapping so they see the mapped
        # status, not the domain exception.
        interceptors: list[grpc.aio.ServerInterceptor] = [TracingServerInterceptor(tracer)]
        if metrics is not None:
            interceptors.append(MetricsInterceptor(metrics, metric_prefix))
        interceptors += [ErrorMappingInterceptor(log), *extra_interceptors]
        self.server = grpc.aio.server(
            # gRPC sets SO_REUSEPORT by default, which lets a second replica on the same host
            # silently share the port; a clash must fail start-up instead.
            options=[
                ("grpc.so_reuseport", 0),
                # gRPC's own default is 4 MiB; a service that takes big documents (routing's
                # rate tables) raises it through CALLMESH_GRPC_MAX_RECEIVE_MB.
                ("grpc.max_receive_message_length", max_receive_bytes),
            ],
            interceptors=interceptors,
        )
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names: list[str] = [HEALTH_SERVICE_NAME]
        self.port: int | None = None

    def add(
        self,
        register: Callable[[Any, grpc.aio.Server], None],
        servicer: Any,
        service_name: str,
    ) -> None:
        """Register `servicer` with its generated `add_XServicer_to_server` function.

        `service_name` is the full proto name (e.g. `callmesh.routing.v1.Routing`), used for
        reflection and per-service health status.
        """
        register(servicer, self.server)
        self.service_names.append(service_name)

    async def start(self) -> int:
        """Bind and start serving; returns the bound port (useful with port 0)."""
        reflection.enable_server_reflection(
            [*self.service_names, reflection.SERVICE_NAME], self.server
        )
        self.port = self.server.add_insecure_port(f"{self.host}:{self.requested_port}")
        await self.server.start()
        await self.set_serving(True)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        """Overall and per-service health: SERVING, or NOT_SERVING while draining."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs, give in-flight ones `grace` seconds, then cancel the rest."""
        await self.set_serving(False)
        await self.server.stop(grace)


def create_channel(
    target: str,
    *,
    tracer: Tracer,
    default_timeout: float,
    options: Iterable[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An insecure grpc.aio channel whose every call has a deadline and trace context."""
    if default_timeout <= 0:
        raise ValueError("default_timeout must be positive: every call needs a deadline")
    return grpc.aio.insecure_channel(
        target,
        options=list(options),
        interceptors=[ClientInterceptor(tracer, default_timeout)],
    )
