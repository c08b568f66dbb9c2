"""The `Queue` gRPC servicer: a thin adapter over `QueueRuntime`.

Requests for a tenant whose queues another live replica owns end with UNAVAILABLE and the
owner's `host:port` in the trailing metadata `callmesh-queue-owner`; the edge re-sends the
same request there (a `Wait` re-sends its `Join`, with the `waiting_id` if it had one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from callmesh.queue.v1 import queue_pb2, queue_pb2_grpc
from callmesh_core.errors import DomainError, InvalidArgument
from callmesh_core.logging import EventLogger

from callmesh_queue.runtime import (
    OWNER_METADATA,
    NotOwner,
    QueueRuntime,
    StreamClosed,
    WaitStream,
)

DEFAULT_WATCH_INTERVAL = 1.0


async def _redirect(context: Any, exc: NotOwner) -> None:
    await context.abort(
        grpc.StatusCode.UNAVAILABLE,
        exc.message,
        trailing_metadata=((OWNER_METADATA, exc.address),),
    )


class QueueServicer(queue_pb2_grpc.QueueServicer):
    def __init__(self, runtime: QueueRuntime, log: EventLogger) -> None:
        self.runtime = runtime
        self.log = log

    async def Wait(
        self, request_iterator: AsyncIterator[queue_pb2.CallerMessage], context: Any
    ) -> AsyncIterator[queue_pb2.QueueInstruction]:
        messages = aiter(request_iterator)
        try:
            first = await anext(messages)
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "join":
            raise InvalidArgument("the first message of a Wait stream must be join")
        try:
            stream = await self.runtime.join(first.join)
        except NotOwner as exc:
            await _redirect(context, exc)
            return
        reader = asyncio.create_task(self._read(stream, messages))
        try:
            while True:
                item = await stream.next()
                if item is None:
                    return
                if isinstance(item, StreamClosed):
                    await context.abort(item.code, item.message)
                    return
                yield item
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.runtime.detach(stream)

    async def _read(
        self, stream: WaitStream, messages: AsyncIterator[queue_pb2.CallerMessage]
    ) -> None:
        while not stream.ended:
            try:
                message = await anext(messages)
            except StopAsyncIteration:
                return  # the edge half-closed; what the queue says next still goes out
            except (grpc.aio.AbortError, grpc.aio.UsageError, grpc.RpcError):
                return  # the RPC is over (cancelled by the edge or aborted by us)
            try:
                await self.runtime.caller_message(stream, message)
            except DomainError as exc:
                stream.close(exc.status_code, exc.message)
            except Exception:
                self.log.exception("caller_message_failed", waiting_id=stream.waiting_id)
                stream.close(grpc.StatusCode.INTERNAL, "internal error")

    async def _agent(
        self, context: Any, tenant_id: str, agent_id: str, name: str, **extra: Any
    ) -> queue_pb2.AgentState:
        try:
            return await self.runtime.agent_operation(tenant_id, agent_id, name, **extra)
        except NotOwner as exc:
            await _redirect(context, exc)
            raise

    @staticmethod
    def _check_all_queues(requested: Any) -> None:
        if list(requested):
            # The engine logs an agent in to every queue they are a member of; a partial
            # log-in would need per-queue agent states, which it does not have yet.
            raise InvalidArgument(
                "per-queue log-in/out is not supported yet: leave queue_ids empty"
            )

    async def AgentLogin(
        self, request: queue_pb2.AgentLoginRequest, context: Any
    ) -> queue_pb2.AgentState:
        self._check_all_queues(request.queue_ids)
        return await self._agent(context, request.tenant_id, request.agent_user_id, "agent_login")

    async def AgentLogout(
        self, request: queue_pb2.AgentLogoutRequest, context: Any
    ) -> queue_pb2.AgentState:
        self._check_all_queues(request.queue_ids)
        return await self._agent(context, request.tenant_id, request.agent_user_id, "agent_logout")

    async def AgentPause(
        self, request: queue_pb2.AgentPauseRequest, context: Any
    ) -> queue_pb2.AgentState:
        return await self._agent(
            context,
            request.tenant_id,
            request.agent_user_id,
            "agent_pause",
            reason=request.reason or "paused",
        )

    async def AgentUnpause(
        self, request: queue_pb2.AgentUnpauseRequest, context: Any
    ) -> queue_pb2.AgentState:
        return await self._agent(context, request.tenant_id, request.agent_user_id, "agent_unpause")

    async def GetAgentState(
        self, request: queue_pb2.GetAgentStateRequest, context: Any
    ) -> queue_pb2.AgentState:
        try:
            return await self.runtime.get_agent_state(request.tenant_id, request.agent_user_id)
        except NotOwner as exc:
            await _redirect(context, exc)
            raise

    async def GetQueueStats(
        self, request: queue_pb2.GetQueueStatsRequest, context: Any
    ) -> queue_pb2.GetQueueStatsReply:
        try:
            stats = await self.runtime.queue_stats(request.tenant_id, request.queue_ids)
        except NotOwner as exc:
            await _redirect(context, exc)
            raise
        return queue_pb2.GetQueueStatsReply(queues=stats)

    async def WatchQueueStats(
        self, request: queue_pb2.WatchQueueStatsRequest, context: Any
    ) -> AsyncIterator[queue_pb2.QueueStats]:
        interval = DEFAULT_WATCH_INTERVAL
        if request.HasField("min_interval"):
            interval = max(request.min_interval.ToNanoseconds() / 1e9, 0.05)
        last: dict[str, bytes] = {}
        while True:
            try:
                stats = await self.runtime.queue_stats(request.tenant_id, request.queue_ids)
            except NotOwner as exc:
                await _redirect(context, exc)
                return
            for figures in stats:
                # Compare without the time stamp and the ever-growing longest wait of a
                # non-empty line, or every tick would count as a change.
                key = queue_pb2.QueueStats()
                key.CopyFrom(figures)
                key.ClearField("at")
                key.ClearField("longest_wait")
                fingerprint = key.SerializeToString(deterministic=True)
                if last.get(figures.queue_id) != fingerprint:
                    last[figures.queue_id] = fingerprint
                    yield figures
            await asyncio.sleep(interval)
