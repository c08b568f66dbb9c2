"""The real process: `python -m callmesh_media` serves MediaControl, and SIGTERM drains it
(GetLoad says draining, new endpoints get UNAVAILABLE, the existing one keeps working) until
the last endpoint is destroyed, then it exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import grpc
import pytest
from callmesh.media.v1 import media_pb2 as pb
from callmesh.media.v1 import media_pb2_grpc

from .harness import Phone, free_port_range


def _free_tcp_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_sigterm_drains_until_the_last_endpoint_is_gone() -> None:
    low, high = free_port_range()
    grpc_port = _free_tcp_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLMESH_")}
    env.update(
        CALLMESH_GRPC_PORT=str(grpc_port),
        CALLMESH_HTTP_PORT=str(_free_tcp_port()),
        CALLMESH_MEDIA_RTP_PORT_MIN=str(low),
        CALLMESH_MEDIA_RTP_PORT_MAX=str(high),
        CALLMESH_REPLICA_ID="media-drain-test",
        GRPC_VERBOSITY="ERROR",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callmesh_media", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = media_pb2_grpc.MediaControlStub(channel)
    phone = await Phone.open()
    try:
        for _ in range(150):
            try:
                await stub.GetLoad(pb.GetLoadRequest(), timeout=0.5)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        created = await stub.CreateEndpoint(
            pb.CreateEndpointRequest(call_id="c1", leg="a", remote_offer=phone.offer())
        )
        process.send_signal(signal.SIGTERM)
        for _ in range(50):
            load = await stub.GetLoad(pb.GetLoadRequest(), timeout=1)
            if load.draining:
                break
            await asyncio.sleep(0.05)
        assert load.draining and load.active_endpoints == 1
        assert load.replica_id == "media-drain-test"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateEndpoint(
                pb.CreateEndpointRequest(call_id="c2", leg="a", remote_offer=phone.offer())
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.sleep(0.3)
        assert process.returncode is None  # still serving its call
        await stub.DestroyEndpoint(pb.DestroyEndpointRequest(endpoint_id=created.endpoint_id))
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        phone.close()
        await channel.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
