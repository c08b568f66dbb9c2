"""Media anchoring through `MediaControl`: one endpoint per leg, bridged when the call connects.

Every unary MediaControl call returns at once (media's own contract), so each gets the same
short deadline; a failure or a missed deadline raises :class:`MediaUnavailable`, which ends
the call with 503 and Retry-After before an answer (never silence).
"""

from __future__ import annotations

import grpc
from callmesh.media.v1 import media_pb2 as pb
from callmesh.media.v1 import media_pb2_grpc


class MediaUnavailable(Exception):
    """MediaControl did not answer in time (or refused): the call cannot be anchored."""


class MediaAnchor:
    """Endpoints and bridges of this edge replica's calls on the media service."""

    def __init__(self, channel: grpc.aio.Channel, *, owner: str, timeout: float) -> None:
        self._stub = media_pb2_grpc.MediaControlStub(channel)
        self._owner = owner
        self._timeout = timeout

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
