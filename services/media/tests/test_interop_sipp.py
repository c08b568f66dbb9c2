"""Interop with a real RTP peer: sipp (a UAS we signal to ourselves with one hand-written
INVITE, since SIP belongs to sip-edge) answers with PCMA and plays its g711a.pcap into a media
endpoint; the endpoint is bridged to a PCMU phone. Every packet sipp sent must arrive at the
phone, in order, transcoded exactly (one table lookup per byte), 30 ms ptime kept."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
from collections.abc import Awaitable, Callable

import pytest
from callmesh.common.v1 import common_pb2
from callmesh.media.v1 import media_pb2 as pb
from callmesh_media.dsp import g711
from callmesh_media.rtp import RtpPacket

from .conftest import FIXTURES, SIPP_SHARE, read_pcap_udp_payloads
from .harness import MediaService, Phone

OpenPhone = Callable[..., Awaitable[Phone]]
PCAP = SIPP_SHARE / "g711a.pcap"

pytestmark = pytest.mark.skipif(
    shutil.which("sipp") is None or not PCAP.exists(), reason="sipp (Debian sip-tester) missing"
)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _invite(sip_port: int, our_port: int, sdp: str) -> bytes:
    body = sdp.encode()
    head = "\r\n".join(
        [
            f"INVITE sip:service@127.0.0.1:{sip_port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{our_port};branch=z9hG4bK-callmesh-1",
            "From: <sip:test@127.0.0.1>;tag=callmesh-test",
            "To: <sip:service@127.0.0.1>",
            "Call-ID: media-interop-1@127.0.0.1",
            "CSeq: 1 INVITE",
            f"Contact: <sip:test@127.0.0.1:{our_port}>",
            "Max-Forwards: 70",
            "Content-Type: application/sdp",
            f"Content-Length: {len(body)}",
        ]
    )
    return head.encode() + b"\r\n\r\n" + body


def _ack(sip_port: int, our_port: int, to_header: str) -> bytes:
    return (
        "\r\n".join(
            [
                f"ACK sip:service@127.0.0.1:{sip_port} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{our_port};branch=z9hG4bK-callmesh-2",
                "From: <sip:test@127.0.0.1>;tag=callmesh-test",
                to_header,
                "Call-ID: media-interop-1@127.0.0.1",
                "CSeq: 1 ACK",
                "Max-Forwards: 70",
                "Content-Length: 0",
            ]
        )
        + "\r\n\r\n"
    ).encode()


async def test_sipp_plays_a_pcap_through_a_transcoding_bridge(
    media: MediaService, phones: OpenPhone
) -> None:
    sip_port, sipp_media_port = _free_udp_port(), _free_udp_port()
    sipp = await asyncio.create_subprocess_exec(
        "sipp",
        "-sf",
        str(FIXTURES / "sipp_uas_play_pcap.xml"),
        "-i",
        "127.0.0.1",
        "-p",
        str(sip_port),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(sipp_media_port),
        "-m",
        "1",
        "-nostdin",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    signalling = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    signalling.bind(("127.0.0.1", 0))
    signalling.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        offer = await media.stub.CreateEndpoint(
            pb.CreateEndpointRequest(call_id="interop", leg="a", create_offer=pb.CreateOffer())
        )
        phone = await phones(g711.PCMU)
        other = await media.endpoint_for(phone)
        bridge = await media.stub.Bridge(
            pb.BridgeRequest(endpoint_a=offer.endpoint_id, endpoint_b=other)
        )
        our_port = signalling.getsockname()[1]
        invite = _invite(sip_port, our_port, offer.local_sdp)
        answer = b""
        for _ in range(50):  # sipp needs a moment to bind; INVITE is retransmitted like a UAC
            await loop.sock_sendto(signalling, invite, ("127.0.0.1", sip_port))
            try:
                answer = await asyncio.wait_for(loop.sock_recv(signalling, 65536), 0.2)
                if answer.startswith(b"SIP/2.0 200"):
                    break
            except TimeoutError:
                continue
        assert answer.startswith(b"SIP/2.0 200"), answer[:80]
        head, _, body = answer.partition(b"\r\n\r\n")
        to_header = next(
            line for line in head.decode().split("\r\n") if line.lower().startswith("to:")
        )
        updated = await media.stub.UpdateEndpoint(
            pb.UpdateEndpointRequest(endpoint_id=offer.endpoint_id, remote_answer=body.decode())
        )
        assert updated.codec == common_pb2.CODEC_PCMA
        assert bridge.transcoding is False  # decided before the answer; now PCMA<->PCMU
        await loop.sock_sendto(
            signalling, _ack(sip_port, our_port, to_header), ("127.0.0.1", sip_port)
        )
        assert await asyncio.wait_for(sipp.wait(), 20) == 0
        await asyncio.sleep(0.2)
    finally:
        signalling.close()
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()

    sent = [RtpPacket.parse(data) for _, data in read_pcap_udp_payloads(PCAP)]
    received = sorted(
        (r.packet for r in phone.received if r.packet.payload_type == 0),
        key=lambda p: p.sequence_number,
    )
    assert len(received) == len(sent)
    assert [p.payload for p in received] == [
        g711.transcode(p.payload, g711.PCMA, g711.PCMU) for p in sent
    ]
    # Timestamps advance by the sender's 30 ms (240 samples) per packet.
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(received)}
    assert steps == {240}
