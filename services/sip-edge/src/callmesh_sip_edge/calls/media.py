"""Media anchoring through `MediaControl`: one endpoint per leg, bridged when the call connects.

Every unary MediaControl call returns at once (media's own contract), so each gets the same
short deadline; a failure or a missed deadline raises :class:`MediaUnavailable`, which ends
the call with 503 and Retry-After before an answer (never silence).
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from callmesh.media.v1 import media_pb2 as pb
from callmesh.media.v1 import media_pb2_grpc
from callmesh.routing.v1 import routing_pb2

EVENTS_STREAM_SECONDS = 3600.0


class MediaUnavailable(Exception):
    """MediaControl did not answer in time (or refused): the call cannot be anchored."""


class MediaAnchor:
    """Endpoints and bridges of this edge replica's calls on the media service."""

    def __init__(self, channel: grpc.aio.Channel, *, owner: str, timeout: float) -> None:
        self._stub = media_pb2_grpc.MediaControlStub(channel)
        self._owner = owner
        self._timeout = timeout
        # Plays waiting for their PlayDone on the Events stream (and PlayDones that came
        # before their Play call returned).
        self._plays: dict[str, asyncio.Future[pb.PlayDone]] = {}
        self._early: dict[str, pb.PlayDone] = {}
        self._events: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._events = asyncio.create_task(self._read_events(), name="media-events")

    async def stop(self) -> None:
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events

    async def _read_events(self) -> None:
        # The stream lives as long as the replica; if it breaks (media restarted, a deadline
        # on the channel) it is opened again.
        while True:
            try:
                # An explicit long deadline: the core's channels give every call without one
                # a short default, which would cut this stream every few seconds.
                stream = self._stub.Events(
                    pb.EventsRequest(owner=self._owner), timeout=EVENTS_STREAM_SECONDS
                )
                async for event in stream:
                    if event.WhichOneof("kind") == "play_done":
                        self._play_done(event.play_done)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.5)

    def _play_done(self, done: pb.PlayDone) -> None:
        waiter = self._plays.pop(done.play_id, None)
        if waiter is None:
            if len(self._early) > 1000:
                self._early.clear()
            self._early[done.play_id] = done
        elif not waiter.done():
            waiter.set_result(done)

    async def play(self, endpoint_id: str, verb: routing_pb2.PlayVerb) -> pb.PlayDone:
        """Play on the endpoint and wait for the end (cancelled: the playback is stopped)."""
        request = pb.PlayRequest(
            target=pb.MediaTarget(endpoint_id=endpoint_id),
            items=verb.items,
            times=verb.times,
            loop_forever=verb.loop_forever,
            stop_on_dtmf=verb.stop_on_dtmf,
            language=verb.language,
        )
        if verb.HasField("max_duration"):
            request.max_duration.CopyFrom(verb.max_duration)
        try:
            reply = await self._stub.Play(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise MediaUnavailable(f"Play: {exc.code().name}") from exc
        early = self._early.pop(reply.play_id, None)
        if early is not None:
            return early
        waiter: asyncio.Future[pb.PlayDone] = asyncio.get_running_loop().create_future()
        self._plays[reply.play_id] = waiter
        try:
            return await waiter
        except asyncio.CancelledError:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._stub.StopPlay(
                    pb.StopPlayRequest(
                        target=pb.MediaTarget(endpoint_id=endpoint_id), play_id=reply.play_id
                    ),
                    timeout=self._timeout,
                )
            raise
        finally:
            self._plays.pop(reply.play_id, None)

    async def create(
        self, *, call_id: str, leg: str, tenant_id: str, remote_offer: bytes | None
    ) -> tuple[str, bytes]:
        """A new endpoint: our answer to ``remote_offer``, or our offer when it is None."""
        request = pb.CreateEndpointRequest(
            call_id=call_id, leg=leg, tenant_id=tenant_id, owner=self._owner
        )
        if remote_offer:
            request.remote_offer = remote_offer.decode("utf-8", "replace")
        else:
            request.create_offer.SetInParent()
        try:
            reply = await self._stub.CreateEndpoint(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise MediaUnavailable(f"CreateEndpoint: {exc.code().name}") from exc
        return reply.endpoint_id, reply.local_sdp.encode()

    async def remote_answer(self, endpoint_id: str, sdp: bytes) -> None:
        try:
            await self._stub.UpdateEndpoint(
                pb.UpdateEndpointRequest(
                    endpoint_id=endpoint_id, remote_answer=sdp.decode("utf-8", "replace")
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise MediaUnavailable(f"UpdateEndpoint: {exc.code().name}") from exc

    async def remote_offer(self, endpoint_id: str, sdp: bytes) -> bytes:
        """A new offer from the far end of a leg (re-INVITE, UPDATE); our answer."""
        try:
            reply = await self._stub.UpdateEndpoint(
                pb.UpdateEndpointRequest(
                    endpoint_id=endpoint_id, remote_offer=sdp.decode("utf-8", "replace")
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise MediaUnavailable(f"UpdateEndpoint: {exc.code().name}") from exc
        return reply.local_sdp.encode()

    async def bridge(self, endpoint_a: str, endpoint_b: str) -> str:
        try:
            reply = await self._stub.Bridge(
                pb.BridgeRequest(endpoint_a=endpoint_a, endpoint_b=endpoint_b),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise MediaUnavailable(f"Bridge: {exc.code().name}") from exc
        return reply.bridge_id

    async def destroy(self, endpoint_id: str) -> None:
        try:
            await self._stub.DestroyEndpoint(
                pb.DestroyEndpointRequest(endpoint_id=endpoint_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError:
            return  # gone already, or media restarted: its own timeout frees the ports
