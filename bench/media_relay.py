"""Bridged G.711 calls relayed through ONE media process, then through rtpengine, side by side.

Load: N calls, each two "phones" (UDP sockets in a separate generator process) sending 20 ms
PCMU packets to each other through the relay, both directions, spread evenly over each 20 ms
period. Each packet carries its send time (CLOCK_MONOTONIC, shared by all processes), so the
receiver measures the latency the relay adds on top of loopback. After a warm-up (address
learning, fast path) a measurement window counts what was sent and what arrived, and the
relay's own CPU time (/proc/<pid>/stat) and resident memory (before/after the calls exist).

Prints `name: value unit` lines:

    media_relay_calls, media_relay_loss_pct, media_relay_latency_p50_ms,
    media_relay_latency_p99_ms, media_relay_cpu_ms_per_call_second, media_relay_rss_kb_per_call

then the same figures as `rtpengine_relay_*` (Debian rtpengine-daemon, userspace only:
--table=-1, driven through its ng control protocol) and `media_relay_*_vs_rtpengine` ratios.

    .venv/bin/python bench/media_relay.py [--calls N] [--seconds S] [--no-rtpengine]

N defaults to $MEDIA_RELAY_CALLS or 200; S to $MEDIA_RELAY_SECONDS or 10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FRAME_BYTES = 160
PACKET_INTERVAL = 0.02
WARMUP_SECONDS = 3.0
_RTP = struct.Struct("!BBHII")
_STAMP = struct.Struct("!QB")  # send time in ns, measured flag
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- bencode (rtpengine's ng protocol) ------------------------------------------------------


def bencode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return str(len(value)).encode() + b":" + value
    if isinstance(value, str):
        return bencode(value.encode())
    if isinstance(value, bool):
        return bencode(int(value))
    if isinstance(value, int):
        return b"i" + str(value).encode() + b"e"
    if isinstance(value, list):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    value, end = _bdecode(data, 0)
    if end != len(data):
        raise ValueError("trailing bytes after bencoded value")
    return value


def _bdecode(data: bytes, at: int) -> tuple[Any, int]:
    lead = data[at : at + 1]
    if lead == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1 : end]), end + 1
    if lead == b"l":
        items, at = [], at + 1
        while data[at : at + 1] != b"e":
            item, at = _bdecode(data, at)
            items.append(item)
        return items, at + 1
    if lead == b"d":
        mapping, at = {}, at + 1
        while data[at : at + 1] != b"e":
            key, at = _bdecode(data, at)
            mapping[key.decode()], at = _bdecode(data, at)
        return mapping, at + 1
    colon = data.index(b":", at)
    length = int(data[at:colon])
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


# -- process measurements -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def offer_sdp(port: int) -> str:
    return (
        "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def sdp_port(sdp: str) -> int:
    for line in sdp.splitlines():
        if line.startswith("m=audio"):
            return int(line.split()[1])
    raise ValueError("no m=audio in SDP")


# -- the generator (a separate process) -----------------------------------------------------


class _Phone(asyncio.DatagramProtocol):
    __slots__ = ("latencies", "received", "transport")

    def __init__(self, latencies: array[int], received: list[int]) -> None:
        self.latencies = latencies
        self.received = received
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic_ns()
        if len(data) < 21 or 192 <= data[1] <= 223:
            return  # RTCP from the relay
        sent, measured = _STAMP.unpack_from(data, 12)
        if measured:
            self.received[0] += 1
            self.latencies.append(now - sent)


class _Sender:
    __slots__ = ("destination", "sequence", "ssrc", "timestamp", "transport")

    def __init__(
        self, transport: asyncio.DatagramTransport, destination: tuple[str, int], ssrc: int
    ) -> None:
        self.transport = transport
        self.destination = destination
        self.ssrc = ssrc
        self.sequence = ssrc * 7 & 0xFFFF
        self.timestamp = ssrc * 160


async def generate(calls: int, seconds: float) -> None:
    """Bind 2N sockets, tell the parent their ports, get targets, send, report (JSON lines)."""
    import uvloop

    del uvloop  # the loop policy is set by the caller; imported only to fail early
    loop = asyncio.get_running_loop()
    latencies: array[int] = array("q")
    received = [0]
    phones: list[_Phone] = []
    for _ in range(2 * calls):
        _, phone = await loop.create_datagram_endpoint(
            lambda: _Phone(latencies, received), local_addr=("127.0.0.1", 0)
        )
        phones.append(phone)
    ports = [p.transport.get_extra_info("sockname")[1] for p in phones]  # type: ignore[union-attr]
    print(json.dumps({"ports": ports}), flush=True)
    targets: list[int] = json.loads(await loop.run_in_executor(None, sys.stdin.readline))["targets"]
    state = [
        _Sender(phone.transport, ("127.0.0.1", target), 0x1000 + index)  # type: ignore[arg-type]
        for index, (phone, target) in enumerate(zip(phones, targets, strict=True))
    ]
    payload_tail = bytes([0xFF]) * (FRAME_BYTES - _STAMP.size)
    sent = [0]
    slots = 4  # spread each 20 ms period over 4 sub-ticks of 5 ms
    groups = [state[i::slots] for i in range(slots)]
    measuring = False
    start = loop.time()
    measure_from = start + WARMUP_SECONDS
    measure_until = measure_from + seconds
    tick = 0
    header = bytearray(12)
    while True:
        now = loop.time()
        if not measuring and now >= measure_from:
            measuring = True
            cpu_from = time.process_time()
            print(json.dumps({"measuring": True}), flush=True)
        if now >= measure_until:
            break
        flag = 1 if measuring else 0
        for sender in groups[tick % slots]:
            _RTP.pack_into(header, 0, 0x80, 0, sender.sequence, sender.timestamp, sender.ssrc)
            sender.transport.sendto(
                bytes(header) + _STAMP.pack(time.monotonic_ns(), flag) + payload_tail,
                sender.destination,
            )
            sender.sequence = (sender.sequence + 1) & 0xFFFF
            sender.timestamp = (sender.timestamp + 160) & 0xFFFFFFFF
            if flag:
                sent[0] += 1
        tick += 1
        delay = start + tick * PACKET_INTERVAL / slots - loop.time()
        await asyncio.sleep(max(0.0, delay))
    generator_load = (time.process_time() - cpu_from) / seconds
    print(json.dumps({"measured": True}), flush=True)
    await asyncio.sleep(0.5)  # let the last packets arrive
    ordered = sorted(latencies)

    def percentile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6 if ordered else 0.0

    print(
        json.dumps(
            {
                "sent": sent[0],
                "received": received[0],
                "p50_ms": percentile(0.5),
                "p99_ms": percentile(0.99),
                "generator_load": generator_load,
            }
        ),
        flush=True,
    )


# -- one run against a relay ------------------------------------------------------------------


def run_load(
    prefix: str,
    calls: int,
    seconds: float,
    relay_pid: int,
    connect: Callable[[list[int]], list[int]],
    rss_before: int,
) -> dict[str, float]:
    """Start the generator, let `connect` set up the calls, measure, print the figures."""
    generator = subprocess.Popen(
        [sys.executable, __file__, "--generate", str(calls), "--seconds", str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert generator.stdin is not None and generator.stdout is not None
    try:
        ports = json.loads(generator.stdout.readline())["ports"]
        targets = connect(ports)
        generator.stdin.write(json.dumps({"targets": targets}) + "\n")
        generator.stdin.flush()
        json.loads(generator.stdout.readline())  # measuring
        cpu_start, wall_start = cpu_seconds(relay_pid), time.monotonic()
        json.loads(generator.stdout.readline())  # measured
        cpu_used, wall = cpu_seconds(relay_pid) - cpu_start, time.monotonic() - wall_start
        rss_during = rss_kb(relay_pid)
        result = json.loads(generator.stdout.readline())
    finally:
        generator.kill()
        generator.wait()
    loss = 100.0 * (1 - result["received"] / result["sent"]) if result["sent"] else 100.0
    figures = {
        "calls": float(calls),
        "loss_pct": loss,
        "latency_p50_ms": result["p50_ms"],
        "latency_p99_ms": result["p99_ms"],
        "cpu_ms_per_call_second": 1000 * cpu_used / (calls * wall),
        "rss_kb_per_call": (rss_during - rss_before) / calls,
    }
    print(f"{prefix}_calls: {calls} calls", flush=True)
    print(f"{prefix}_loss_pct: {loss:.3f} %")
    print(f"{prefix}_latency_p50_ms: {result['p50_ms']:.3f} ms")
    print(f"{prefix}_latency_p99_ms: {result['p99_ms']:.3f} ms")
    print(f"{prefix}_cpu_ms_per_call_second: {figures['cpu_ms_per_call_second']:.3f} ms")
    print(f"{prefix}_rss_kb_per_call: {figures['rss_kb_per_call']:.1f} kB")
    print(f"{prefix}_relay_cpu_load: {100 * cpu_used / wall:.1f} %")
    print(f"{prefix}_packets_per_second: {result['sent'] / seconds:.0f} packets/s")
    # A generator near 100% of a core delays its own stamps: latency then measures it, too.
    print(f"{prefix}_generator_cpu_load: {100 * result['generator_load']:.1f} %", flush=True)
    return figures


def bench_media(calls: int, seconds: float) -> dict[str, float]:
    import grpc
    from callmesh.media.v1 import media_pb2 as pb
    from callmesh.media.v1 import media_pb2_grpc

    grpc_port = free_port()
    # Below the kernel's ephemeral range (32768+), where the generator's sockets land.
    rtp_low, rtp_high = 20000, 32000
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLMESH_")}
    env.update(
        CALLMESH_GRPC_PORT=str(grpc_port),
        CALLMESH_HTTP_PORT=str(free_port()),
        CALLMESH_REPLICA_ID="media-bench",
        CALLMESH_LOG_LEVEL="warning",
        CALLMESH_MEDIA_RTP_PORT_MIN=str(rtp_low),
        CALLMESH_MEDIA_RTP_PORT_MAX=str(rtp_high),
        CALLMESH_MEDIA_CAPACITY_ENDPOINTS=str(2 * calls),
        # The calls are still up when the bench ends: do not wait for them to hang up.
        CALLMESH_DRAIN_GRACE_SECONDS="0.5",
        GRPC_VERBOSITY="ERROR",
    )
    media = subprocess.Popen([sys.executable, "-m", "callmesh_media"], env=env)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = media_pb2_grpc.MediaControlStub(channel)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                stub.GetLoad(pb.GetLoadRequest(), timeout=1)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline or media.poll() is not None:
                    raise RuntimeError("media service did not start") from None
                time.sleep(0.2)
        rss_before = rss_kb(media.pid)

        def connect(ports: list[int]) -> list[int]:
            targets = [0] * len(ports)
            for call in range(calls):
                a, b = ports[2 * call], ports[2 * call + 1]
                endpoints = []
                for leg, port, index in (("a", a, 2 * call), ("b", b, 2 * call + 1)):
                    reply = stub.CreateEndpoint(
                        pb.CreateEndpointRequest(
                            call_id=f"bench-{call}",
                            leg=leg,
                            owner="bench",
                            remote_offer=offer_sdp(port),
                        ),
                        timeout=5,
                    )
                    targets[index] = sdp_port(reply.local_sdp)
                    endpoints.append(reply.endpoint_id)
                stub.Bridge(
                    pb.BridgeRequest(endpoint_a=endpoints[0], endpoint_b=endpoints[1]), timeout=5
                )
            return targets

        return run_load("media_relay", calls, seconds, media.pid, connect, rss_before)
    finally:
        channel.close()
        media.send_signal(signal.SIGTERM)
        try:
            media.wait(10)
        except subprocess.TimeoutExpired:
            media.kill()
            media.wait()


def bench_rtpengine(calls: int, seconds: float) -> dict[str, float] | None:
    binary = shutil.which("rtpengine")
    if binary is None:
        print("rtpengine_relay_skipped: 1 (rtpengine not installed)")
        return None
    ng_port = free_port(socket.SOCK_DGRAM)
    rtp_low = 10000  # below the ephemeral range and apart from the media run's ports
    workdir = Path(tempfile.mkdtemp(prefix="rtpengine-bench-"))
    engine = subprocess.Popen(
        [
            binary,
            "--config-file=none",
            "--table=-1",
            "--foreground",
            "--log-stderr",
            "--log-level=3",
            "--interface=127.0.0.1",
            f"--listen-ng=127.0.0.1:{ng_port}",
            f"--port-min={rtp_low}",
            f"--port-max={min(19999, rtp_low + 4 * calls + 200)}",
            f"--pidfile={workdir / 'rtpengine.pid'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control.settimeout(2)
    cookie = 0

    def ng(message: dict[str, Any]) -> dict[str, Any]:
        nonlocal cookie
        cookie += 1
        token = f"c{cookie}".encode()
        control.sendto(token + b" " + bencode(message), ("127.0.0.1", ng_port))
        while True:
            data, _ = control.recvfrom(65536)
            if data.startswith(token + b" "):
                reply: dict[str, Any] = bdecode(data[len(token) + 1 :])
                if reply.get("result") not in (b"ok", b"pong", None):
                    raise RuntimeError(f"rtpengine {message['command']}: {reply}")
                return reply

    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                ng({"command": "ping"})
                break
            except (TimeoutError, ConnectionRefusedError, OSError):
                if time.monotonic() > deadline or engine.poll() is not None:
                    print("rtpengine_relay_skipped: 1 (rtpengine did not start)")
                    return None
                time.sleep(0.2)
        rss_before = rss_kb(engine.pid)

        def connect(ports: list[int]) -> list[int]:
            targets = [0] * len(ports)
            for call in range(calls):
                a, b = ports[2 * call], ports[2 * call + 1]
                common = {"call-id": f"bench-{call}", "from-tag": "a"}
                offer = ng({"command": "offer", "sdp": offer_sdp(a), **common})
                answer = ng({"command": "answer", "sdp": offer_sdp(b), "to-tag": "b", **common})
                targets[2 * call + 1] = sdp_port(offer["sdp"].decode())  # b sends here
                targets[2 * call] = sdp_port(answer["sdp"].decode())  # a sends here
            return targets

        return run_load("rtpengine_relay", calls, seconds, engine.pid, connect, rss_before)
    finally:
        control.close()
        engine.terminate()
        try:
            engine.wait(10)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=int(os.environ.get("MEDIA_RELAY_CALLS", 200)))
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("MEDIA_RELAY_SECONDS", 10))
    )
    parser.add_argument("--no-rtpengine", action="store_true")
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        import uvloop

        uvloop.run(generate(args.generate, args.seconds))
        return
    ours = bench_media(args.calls, args.seconds)
    if args.no_rtpengine:
        return
    theirs = bench_rtpengine(args.calls, args.seconds)
    if theirs is None:
        return
    for name in ("cpu_ms_per_call_second", "rss_kb_per_call", "latency_p99_ms"):
        if theirs[name] > 0:
            print(f"media_relay_{name}_vs_rtpengine: {ours[name] / theirs[name]:.2f} x")


if __name__ == "__main__":
    main()
