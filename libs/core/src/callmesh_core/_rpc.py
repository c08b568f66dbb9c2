"""Wrapping grpc.aio method handlers, shared by the server interceptors.

A grpc.aio server interceptor receives an `RpcMethodHandler` and must return one; wrapping the
behaviour inside it is how an interceptor gets to run code *around* the servicer method (the
interceptor API itself only sees the call before the handler is chosen).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
"""A handler behaviour that returns one response (or streams via `context.write`)."""

StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]
"""A handler behaviour written as an async generator of responses."""

Around = Callable[
    [Callable[[], Awaitable[Any]], grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]
]
"""Runs `invoke()` (the original behaviour) inside whatever the interceptor sets up."""

AroundStream = Callable[
    [Callable[[], AsyncIterator[Any]], grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]
]


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], around: Around, around_stream: AroundStream
) -> grpc.RpcMethodHandler[Any, Any]:
    """A copy of `handler` whose behaviour runs inside `around` / `around_stream`."""
    if handler.request_streaming and handler.response_streaming:
        behavior, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    if behavior is None:
        return handler
    original: Callable[..., Any] = behavior

    wrapped: Callable[..., Any]
    if inspect.isasyncgenfunction(original):

        def wrapped_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            return around_stream(lambda: original(request, context), context)

        # grpc.aio tells generator handlers from coroutine handlers by inspecting the function,
        # so the wrapper must itself be an async generator function.
        async def wrapped_gen(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async for response in wrapped_stream(request, context):
                yield response

        wrapped = wrapped_gen
    else:

        async def wrapped_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await around(lambda: original(request, context), context)

        wrapped = wrapped_unary

    new_handler: grpc.RpcMethodHandler[Any, Any] = factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return new_handler


# Health probes and reflection arrive every few seconds from kubelet and tooling; tracing and
# counting them would drown the service's real traffic.
INFRASTRUCTURE_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
)


def is_infrastructure_method(full_method: str) -> bool:
    return full_method.startswith(INFRASTRUCTURE_METHOD_PREFIXES)


def split_method(full_method: str) -> tuple[str, str]:
    """`/pkg.Service/Method` -> (`pkg.Service`, `Method`)."""
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method


def status_of(
    context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None
) -> grpc.StatusCode:
    """The status an RPC ended with, seen from an interceptor around its handler."""
    code = context.code()
    if error is None:
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK
    if isinstance(error, grpc.aio.AbortError):
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN
