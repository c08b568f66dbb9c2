"""B2BUA calls between real sipp processes: sipp uac -> edge -> sipp uas, all on 127.0.0.1.

The caller authenticates its INVITE with MD5 digest (407, as sipp 3.6 answers only the first
challenge the edge offers MD5 first); each callee is a fresh extension registered from the
very port its sipp uas then listens on (the edge calls a contact on the flow it registered
from). Routing is `RoutingTestDouble` (conftest): a test double of the internal Routing
contract that dials the called extension; the api's real Provisioning server, PostgreSQL and
Kafka are real. Every sipp has its own deadline and is killed in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from callmesh.common.v1 import common_pb2
from callmesh.events.v1 import calls_pb2
from callmesh.media.v1 import media_pb2 as media_pb
from callmesh.media.v1 import media_pb2_grpc
from callmesh.provisioning.v1 import provisioning_pb2 as ppb
from callmesh.routing.v1 import routing_pb2
from callmesh_core.grpc_server import GrpcServer
from callmesh_media.engine import EngineConfig, MediaEngine
from callmesh_media.events import EventBus
from callmesh_media.servicer import MediaControlServicer
from callmesh_media.sounds import SoundLibrary
from callmesh_sip_edge.app import drain_calls
from callmesh_sip_edge.sip.message import new_branch, new_tag
from opentelemetry import trace

from .conftest import (
    LOG,
    Account,
    Provisioned,
    RoutingServer,
    RunningEdge,
    SipClient,
    edge_replica,
    free_udp_tcp_port,
)

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
ROUTING_DEADLINE = 0.4

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")


@pytest.fixture(scope="module")
async def calls_edge(
    edge: RunningEdge, kafka_bootstrap: str, provisioning: Provisioned, routing: RoutingServer
) -> AsyncIterator[RunningEdge]:
    """A replica on the shared schema offering MD5 first, with a short routing deadline."""
    async with edge_replica(
        edge.pool,
        edge.schema,
        kafka_bootstrap=kafka_bootstrap,
        provisioning=provisioning,
        routing=routing,
        replica_id="edge-calls-0",
        sip_edge_digest_algorithms="MD5,SHA-256",
        sip_edge_routing_timeout_seconds=ROUTING_DEADLINE,
        invite_rate_per_second=100.0,
        invite_burst=100,
    ) as running:
        yield running


@dataclass
class Sipp:
    process: asyncio.subprocess.Process
    errors: Path
    name: str

    async def result(self, deadline: float) -> tuple[int, str]:
        try:
            out, err = await asyncio.wait_for(self.process.communicate(), deadline)
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        errors = self.errors.read_text(errors="replace") if self.errors.exists() else ""
        messages = self.errors.with_name(f"{self.name}_messages.log")
        if messages.exists():
            errors += "\n--- messages ---\n" + messages.read_text(errors="replace")[-6000:]
        detail = f"{self.name}: {out.decode(errors='replace')[-1500:]}\n{err.decode()[-500:]}"
        assert self.process.returncode is not None
        return self.process.returncode, detail + "\n" + errors[-3000:]


def _media_port() -> int:
    """A port for sipp's RTP sockets (it opens several above it) below the ephemeral range,
    so it never takes the signalling port picked for another sipp."""
    for _ in range(50):
        port = random.randrange(20000, 30000, 4)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no media port free")


async def _sipp(argv: list[str], name: str, tmp: Path, local_ip: str = "127.0.0.1") -> Sipp:
    errors = tmp / f"{name}_errors.log"
    process = await asyncio.create_subprocess_exec(
        "sipp",
        *argv,
        "-i",
        local_ip,
        "-mp",
        str(_media_port()),
        "-m",
        "1",
        "-timeout",
        "20s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(errors),
        "-trace_msg",
        "-message_file",
        str(tmp / f"{name}_messages.log"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Sipp(process, errors, name)


async def _callee(
    edge: RunningEdge, provisioning: Provisioned, scenario: str, tmp: Path, account: Account
) -> Sipp:
    """Register ``account`` from a free port, then start a sipp uas on that port."""
    port = free_udp_tcp_port()
    async with SipClient(edge.port, local_port=port) as client:
        _, ok, _ = await client.register(account, expires=120)
        assert ok.status_code == 200, ok
    return await _sipp(["-sf", str(SIPP_DIR / scenario), "-p", str(port)], f"uas{port}", tmp)


async def _caller(
    edge: RunningEdge, caller: Account, callee: str, scenario: str, tmp: Path
) -> Sipp:
    return await _sipp(
        [
            f"127.0.0.1:{edge.port}",
            "-sf",
            str(SIPP_DIR / scenario),
            "-p",
            str(free_udp_tcp_port()),
            "-s",
            callee,
            "-au",
            caller.extension,
            "-ap",
            caller.password,
            "-key",
            "domain",
            caller.domain,
            "-key",
            "caller",
            caller.extension,
        ],
        "uac",
        tmp,
    )


async def _new_extension(provisioning: Provisioned) -> Account:
    base = provisioning.accounts["acme101"]
    extension = str(5000 + uuid.uuid4().int % 4000)
    return await provisioning.user(
        f"callee{extension}", base.tenant_id, base.domain, extension, f"pw-{extension}-secret"
    )


async def _all_ok(*runs: Sipp, deadline: float = 25.0) -> None:
    results = await asyncio.gather(*(run.result(deadline) for run in runs))
    for code, detail in results:
        assert code == 0, detail


async def _wait_no_calls(edge: RunningEdge, wait: float = 5.0) -> None:
    await asyncio.wait_for(edge.runtime.calls.wait_calls_ended(), wait)
    assert edge.runtime.calls.active_calls == 0


async def _events_of(kafka_bootstrap: str, call_id: str, count: int) -> list[calls_pb2.CallEvent]:
    consumer = AIOKafkaConsumer(
        "callmesh.calls.v1",
        bootstrap_servers=kafka_bootstrap,
        group_id=f"t-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[calls_pb2.CallEvent] = []
    try:
        deadline = time.monotonic() + 15
        while len(found) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    if record.key == call_id.encode():
                        assert record.value is not None
                        found.append(calls_pb2.CallEvent.FromString(record.value))
    finally:
        await consumer.stop()
    return found


def _plan(routing: RoutingServer, callee: str) -> routing_pb2.PlanRequest:
    return [p for p in routing.double.plans if p.call.callee_number == callee][-1]


async def test_answered_call_callee_hangs_up_and_call_events_reach_kafka(
    calls_edge: RunningEdge,
    provisioning: Provisioned,
    routing: RoutingServer,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    uas = await _callee(calls_edge, provisioning, "uas_answer_then_bye.xml", tmp_path, callee)
    try:
        uac = await _caller(
            calls_edge, caller, callee.extension, "uac_call_callee_bye.xml", tmp_path
        )
        await _all_ok(uac, uas)
    finally:
        with contextlib.suppress(ProcessLookupError):
            uas.process.kill()
    await _wait_no_calls(calls_edge)

    plan = _plan(routing, callee.extension)
    call = plan.call
    assert call.tenant_id == caller.tenant_id
    assert call.caller_extension == "101" and call.caller_user_id == caller.user_id
    assert call.direction == 3  # INTERNAL: the callee is an extension of the tenant
    continued = [c for c in routing.double.continues if c.call.call_id == call.call_id]
    assert len(continued) == 1 and continued[0].state == b"after-dial"
    dial = continued[0].result.dial
    assert dial.status == routing_pb2.DIAL_STATUS_ANSWERED and dial.answered_leg == "b1"
    assert dial.talk_duration.ToNanoseconds() > 0.5e9

    events = await _events_of(kafka_bootstrap, call.call_id, 8)
    by_leg: dict[str, list[calls_pb2.CallEvent]] = {}
    for event in events:
        by_leg.setdefault(event.leg, []).append(event)
    assert sorted(by_leg) == ["a", "b1"]
    for leg, leg_events in by_leg.items():
        assert [e.seq for e in leg_events] == [1, 2, 3, 4], leg
        assert [e.WhichOneof("kind") for e in leg_events] == [
            "attempt",
            "ringing",
            "answered",
            "ended",
        ]
        assert all(e.tenant_id == caller.tenant_id for e in leg_events)
    a_end = by_leg["a"][-1].ended
    b_end = by_leg["b1"][-1].ended
    assert a_end.outcome == calls_pb2.CALL_OUTCOME_ANSWERED
    assert b_end.hangup_side == calls_pb2.HANGUP_SIDE_CALLEE
    assert a_end.talk_duration.ToNanoseconds() > 0.5e9
    assert 0 < a_end.post_dial_delay.ToNanoseconds() < a_end.total_duration.ToNanoseconds()
    assert by_leg["b1"][0].attempt.callee_extension == callee.extension
    assert by_leg["a"][0].sip_call_id == call.sip_call_id


async def test_caller_hangs_up(
    calls_edge: RunningEdge, provisioning: Provisioned, routing: RoutingServer, tmp_path: Path
) -> None:
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    uas = await _callee(calls_edge, provisioning, "uas_answer.xml", tmp_path, callee)
    try:
        uac = await _caller(
            calls_edge, caller, callee.extension, "uac_call_caller_bye.xml", tmp_path
        )
        await _all_ok(uac, uas)
    finally:
        with contextlib.suppress(ProcessLookupError):
            uas.process.kill()
    await _wait_no_calls(calls_edge)
    call_id = _plan(routing, callee.extension).call.call_id
    # The caller's BYE ends the whole call: routing is not asked again.
    assert not [c for c in routing.double.continues if c.call.call_id == call_id]


async def test_busy_callee_gives_the_caller_486(
    calls_edge: RunningEdge, provisioning: Provisioned, routing: RoutingServer, tmp_path: Path
) -> None:
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    uas = await _callee(calls_edge, provisioning, "uas_busy.xml", tmp_path, callee)
    try:
        uac = await _caller(calls_edge, caller, callee.extension, "uac_call_busy.xml", tmp_path)
        await _all_ok(uac, uas)
    finally:
        with contextlib.suppress(ProcessLookupError):
            uas.process.kill()
    await _wait_no_calls(calls_edge)
    call_id = _plan(routing, callee.extension).call.call_id
    [continued] = [c for c in routing.double.continues if c.call.call_id == call_id]
    assert continued.result.dial.status == routing_pb2.DIAL_STATUS_BUSY
    assert [t.sip_status for t in continued.result.dial.targets] == [486]


async def test_no_answer_then_cancel_gives_487(
    calls_edge: RunningEdge, provisioning: Provisioned, routing: RoutingServer, tmp_path: Path
) -> None:
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    uas = await _callee(calls_edge, provisioning, "uas_ring_until_cancel.xml", tmp_path, callee)
    try:
        uac = await _caller(calls_edge, caller, callee.extension, "uac_call_cancel.xml", tmp_path)
        await _all_ok(uac, uas)
    finally:
        with contextlib.suppress(ProcessLookupError):
            uas.process.kill()
    await _wait_no_calls(calls_edge)


async def test_cancel_reaches_every_forked_contact(
    calls_edge: RunningEdge, provisioning: Provisioned, routing: RoutingServer, tmp_path: Path
) -> None:
    """Two registered contacts of one extension ring at once; the caller's CANCEL
    cancels both (each sipp uas exits 0 only after CANCEL, 200, 487 and the ACK)."""
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    first = await _callee(calls_edge, provisioning, "uas_ring_until_cancel.xml", tmp_path, callee)
    second = await _callee(calls_edge, provisioning, "uas_ring_until_cancel.xml", tmp_path, callee)
    try:
        uac = await _caller(calls_edge, caller, callee.extension, "uac_call_cancel.xml", tmp_path)
        await _all_ok(uac, first, second)
    finally:
        for run in (first, second):
            with contextlib.suppress(ProcessLookupError):
                run.process.kill()
    await _wait_no_calls(calls_edge)


async def test_first_answer_wins_and_the_other_fork_is_cancelled(
    calls_edge: RunningEdge, provisioning: Provisioned, routing: RoutingServer, tmp_path: Path
) -> None:
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    ringing = await _callee(calls_edge, provisioning, "uas_ring_until_cancel.xml", tmp_path, callee)
    answering = await _callee(calls_edge, provisioning, "uas_answer.xml", tmp_path, callee)
    try:
        uac = await _caller(
            calls_edge, caller, callee.extension, "uac_call_caller_bye.xml", tmp_path
        )
        await _all_ok(uac, ringing, answering)
    finally:
        for run in (ringing, answering):
            with contextlib.suppress(ProcessLookupError):
                run.process.kill()
    await _wait_no_calls(calls_edge)


async def test_routing_past_its_deadline_gives_503_with_retry_after(
    calls_edge: RunningEdge, provisioning: Provisioned, routing: RoutingServer, tmp_path: Path
) -> None:
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    routing.double.stall = ROUTING_DEADLINE * 3
    try:
        uac = await _caller(calls_edge, caller, callee.extension, "uac_call_503.xml", tmp_path)
        await _all_ok(uac)
    finally:
        routing.double.stall = 0.0
    await _wait_no_calls(calls_edge)


async def test_hold_and_unhold_re_invite_passes_through(
    calls_edge: RunningEdge, provisioning: Provisioned, tmp_path: Path
) -> None:
    """The caller's re-INVITE with a=sendonly reaches the callee (its sipp checks the
    offer); the callee's a=recvonly answer reaches the caller (its sipp checks it)."""
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    uas = await _callee(calls_edge, provisioning, "uas_answer_hold.xml", tmp_path, callee)
    try:
        uac = await _caller(calls_edge, caller, callee.extension, "uac_call_hold.xml", tmp_path)
        await _all_ok(uac, uas)
    finally:
        with contextlib.suppress(ProcessLookupError):
            uas.process.kill()
    await _wait_no_calls(calls_edge)


async def test_a_trunk_calls_an_extension_without_digest(
    calls_edge: RunningEdge, provisioning: Provisioned, routing: RoutingServer, tmp_path: Path
) -> None:
    """An INVITE from an IP-authenticated trunk's address is an inbound call of its tenant."""
    base = provisioning.accounts["acme101"]
    source = "127.0.0.9"
    reply = await provisioning.stub.UpsertTrunk(
        ppb.UpsertTrunkRequest(
            trunk=ppb.Trunk(
                tenant_id=base.tenant_id,
                name=f"carrier-{uuid.uuid4().hex[:6]}",
                host=source,
                port=5060,
                ip=ppb.IpAuth(source_cidrs=[f"{source}/32"]),
                enabled=True,
            )
        )
    )
    callee = await _new_extension(provisioning)
    uas = await _callee(calls_edge, provisioning, "uas_answer.xml", tmp_path, callee)
    try:
        uac = await _sipp(
            [
                f"127.0.0.1:{calls_edge.port}",
                "-sf",
                str(SIPP_DIR / "uac_trunk_call.xml"),
                "-p",
                str(free_udp_tcp_port(source)),
                "-s",
                callee.extension,
                "-key",
                "domain",
                base.domain,
                "-key",
                "caller",
                "74951234567",
            ],
            "uac",
            tmp_path,
            local_ip=source,
        )
        await _all_ok(uac, uas)
    finally:
        with contextlib.suppress(ProcessLookupError):
            uas.process.kill()
        await provisioning.stub.DeleteTrunk(
            ppb.DeleteRequest(tenant_id=base.tenant_id, id=reply.trunk.trunk_id)
        )
    await _wait_no_calls(calls_edge)
    call = _plan(routing, callee.extension).call
    assert call.direction == 1  # INBOUND
    assert call.trunk_id == reply.trunk.trunk_id and call.tenant_id == base.tenant_id
    assert call.caller_number == "74951234567" and call.caller_user_id == ""


def _invite(edge_port: int, local_port: int, account: Account, callee: str) -> bytes:
    lines = [
        f"INVITE sip:{callee}@{account.domain} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={new_branch()};rport",
        "Max-Forwards: 70",
        f"From: <sip:{account.extension}@{account.domain}>;tag={new_tag()}",
        f"To: <sip:{callee}@{account.domain}>",
        f"Call-ID: drain-{uuid.uuid4().hex}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:{account.extension}@127.0.0.1:{local_port}>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_drain_refuses_new_calls_and_waits_for_the_call_in_progress(
    calls_edge: RunningEdge, provisioning: Provisioned, tmp_path: Path
) -> None:
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    runtime = calls_edge.runtime
    uas = await _callee(calls_edge, provisioning, "uas_answer_then_bye.xml", tmp_path, callee)
    drain: asyncio.Task[None] | None = None
    try:
        uac = await _caller(
            calls_edge, caller, callee.extension, "uac_call_callee_bye.xml", tmp_path
        )
        for _ in range(500):  # the call is admitted once sipp has authenticated
            if runtime.calls.active_calls:
                break
            await asyncio.sleep(0.02)
        assert runtime.calls.active_calls == 1
        drain = asyncio.create_task(drain_calls(runtime, LOG))
        async with SipClient(calls_edge.port) as client:
            client.send_raw(_invite(calls_edge.port, client.local_port, caller, callee.extension))
            refused = await client.response()
        assert refused.status_code == 503 and refused.get("retry-after") == "5"
        assert not drain.done()  # the call in progress keeps the replica draining
        await _all_ok(uac, uas)
        await asyncio.wait_for(drain, 5)
        assert runtime.calls.active_calls == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            uas.process.kill()
        if drain is not None:
            drain.cancel()
        runtime.edge.draining = False
        runtime.calls.draining = False


async def test_verbs_run_in_order_and_a_verb_that_cannot_run_reports_why(
    calls_edge: RunningEdge, provisioning: Provisioned, routing: RoutingServer, tmp_path: Path
) -> None:
    """play needs a media endpoint (none without anchoring): routing hears VerbFailed and the
    verbs after it are dropped; an unknown number's hangup verb with 486 reaches the caller."""
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    routing.double.scripted[callee.extension] = [
        routing_pb2.Verb(id="greet", play=routing_pb2.PlayVerb()),
        routing_pb2.Verb(id="never", answer=routing_pb2.AnswerVerb()),
    ]
    routing.double.scripted["9486"] = [
        routing_pb2.Verb(id="busy", hangup=routing_pb2.HangupVerb(sip_status=486)),
    ]
    try:
        # The failed play leads to Continue, which answers "no more verbs": 480 for the caller.
        uac = await _caller(calls_edge, caller, callee.extension, "uac_call_480.xml", tmp_path)
        await _all_ok(uac)
        busy = await _caller(calls_edge, caller, "9486", "uac_call_busy.xml", tmp_path)
        await _all_ok(busy)
    finally:
        routing.double.scripted.clear()
    await _wait_no_calls(calls_edge)
    call_id = _plan(routing, callee.extension).call.call_id
    [continued] = [c for c in routing.double.continues if c.call.call_id == call_id]
    assert continued.state == b"scripted"
    assert continued.result.verb_id == "greet"
    assert continued.result.failed.reason == "media-unavailable"
    assert not continued.call.answered  # the answer verb after play never ran
    busy_call = _plan(routing, "9486").call.call_id
    assert not [c for c in routing.double.continues if c.call.call_id == busy_call]


@dataclass
class RunningMedia:
    engine: MediaEngine
    stub: media_pb2_grpc.MediaControlStub
    address: str
    ports: tuple[int, int]


@pytest.fixture(scope="module")
async def media(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningMedia]:
    """The media service's real engine and MediaControl servicer on a grpc.aio server."""
    tmp = tmp_path_factory.mktemp("media")
    low, high = 31000, 31199  # below the ephemeral range and the sipp RTP ports above
    bus = EventBus()
    engine = MediaEngine(
        EngineConfig(
            replica_id="media-test",
            rtp_host="127.0.0.1",
            advertised_address="127.0.0.1",
            port_min=low,
            port_max=high,
            recording_dir=tmp / "recordings",
        ),
        SoundLibrary(
            sounds_dir=tmp / "sounds",
            moh_dir=tmp / "moh",
            tenant_prompts_dir=tmp / "prompts",
            default_language="en",
        ),
        LOG,
        bus,
    )
    engine.start()
    server = GrpcServer(host="127.0.0.1", port=0, tracer=trace.get_tracer("t"), log=LOG)
    server.add(
        media_pb2_grpc.add_MediaControlServicer_to_server,
        MediaControlServicer(engine, bus, "media-test"),
        "callmesh.media.v1.MediaControl",
    )
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield RunningMedia(
            engine, media_pb2_grpc.MediaControlStub(channel), f"127.0.0.1:{port}", (low, high)
        )
    finally:
        await channel.close()
        await server.stop(0)
        await engine.close()


@pytest.fixture(scope="module")
async def anchored_edge(
    edge: RunningEdge,
    kafka_bootstrap: str,
    provisioning: Provisioned,
    routing: RoutingServer,
    media: RunningMedia,
) -> AsyncIterator[RunningEdge]:
    """A replica that anchors media on the real MediaControl."""
    async with edge_replica(
        edge.pool,
        edge.schema,
        kafka_bootstrap=kafka_bootstrap,
        provisioning=provisioning,
        routing=routing,
        replica_id="edge-media-0",
        media_address=media.address,
        sip_edge_digest_algorithms="MD5,SHA-256",
    ) as running:
        yield running


def _sdp_ports(messages: Path, start_line: str) -> list[int]:
    """m=audio ports of the SDP bodies of messages starting with ``start_line`` in a sipp
    message log."""
    text = messages.read_text(errors="replace")
    ports: list[int] = []
    for block in text.split("-----------------------------------------------"):
        lines = [line.strip() for line in block.splitlines()]
        heads = [i for i, line in enumerate(lines) if line.startswith(start_line)]
        if not heads:
            continue
        ports += [int(line.split()[1]) for line in lines[heads[0] :] if line.startswith("m=audio ")]
    return ports


async def test_media_is_anchored_on_two_bridged_endpoints(
    anchored_edge: RunningEdge, media: RunningMedia, provisioning: Provisioned, tmp_path: Path
) -> None:
    """Each side sees an SDP of a media endpoint (port in media's range), never the other
    phone's; while the call is up media holds two endpoints and one bridge; none after."""
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    low, high = media.ports
    uas = await _callee(anchored_edge, provisioning, "uas_answer_then_bye.xml", tmp_path, callee)
    try:
        uac = await _caller(
            anchored_edge, caller, callee.extension, "uac_call_callee_bye.xml", tmp_path
        )
        load = None
        for _ in range(200):  # answered 0.3 s after ringing, hung up 0.7 s later
            load = await media.stub.GetLoad(media_pb.GetLoadRequest())
            if load.active_bridges:
                break
            await asyncio.sleep(0.02)
        assert load is not None and load.active_bridges == 1 and load.active_endpoints == 2
        await _all_ok(uac, uas)
    finally:
        with contextlib.suppress(ProcessLookupError):
            uas.process.kill()
    await _wait_no_calls(anchored_edge)
    for _ in range(100):
        load = await media.stub.GetLoad(media_pb.GetLoadRequest())
        if load.active_endpoints == 0:
            break
        await asyncio.sleep(0.02)
    assert load.active_endpoints == 0 and load.active_bridges == 0
    offered_to_callee = _sdp_ports(uas.errors.with_name(f"{uas.name}_messages.log"), "INVITE ")
    answered_to_caller = _sdp_ports(uac.errors.with_name("uac_messages.log"), "SIP/2.0 200 OK")
    assert offered_to_callee and all(low <= p <= high for p in offered_to_callee)
    assert answered_to_caller and all(low <= p <= high for p in answered_to_caller)
    assert set(offered_to_callee).isdisjoint(answered_to_caller)


def _timeline(messages: Path) -> list[tuple[float, str]]:
    """(time, start line) of every message in a sipp message log."""
    out: list[tuple[float, str]] = []
    for block in messages.read_text(errors="replace").split("-" * 47 + " ")[1:]:
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        stamp = dt.datetime.strptime(lines[0], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        out.append((stamp, lines[2] if len(lines) > 2 else ""))
    return out


async def test_play_runs_through_media_control_before_the_next_verb(
    anchored_edge: RunningEdge, routing: RoutingServer, provisioning: Provisioned, tmp_path: Path
) -> None:
    """answer, play a 600 ms tone, hangup: the BYE comes only after the tone has played."""
    caller = provisioning.accounts["acme101"]
    tone = common_pb2.Tone(frequencies_hz=[425])
    tone.total.FromMilliseconds(600)
    routing.double.scripted["9700"] = [
        routing_pb2.Verb(id="answer", answer=routing_pb2.AnswerVerb()),
        routing_pb2.Verb(
            id="tone", play=routing_pb2.PlayVerb(items=[common_pb2.MediaSource(tone=tone)])
        ),
        routing_pb2.Verb(id="bye", hangup=routing_pb2.HangupVerb()),
    ]
    try:
        uac = await _caller(anchored_edge, caller, "9700", "uac_call_callee_bye.xml", tmp_path)
        await _all_ok(uac)
    finally:
        routing.double.scripted.clear()
    await _wait_no_calls(anchored_edge)
    timeline = _timeline(uac.errors.with_name("uac_messages.log"))
    answered = next(t for t, line in timeline if line.startswith("SIP/2.0 200 OK"))
    bye = next(t for t, line in timeline if line.startswith("BYE "))
    assert bye - answered >= 0.55, timeline


async def test_dial_timeout_cancels_the_callee_and_the_caller_gets_480(
    calls_edge: RunningEdge, provisioning: Provisioned, routing: RoutingServer, tmp_path: Path
) -> None:
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    dial = routing_pb2.DialVerb(
        targets=[
            routing_pb2.DialTarget(
                extension=routing_pb2.ExtensionTarget(extension=callee.extension)
            )
        ]
    )
    dial.timeout.FromMilliseconds(800)
    routing.double.scripted[callee.extension] = [routing_pb2.Verb(id="ring", dial=dial)]
    uas = await _callee(calls_edge, provisioning, "uas_ring_until_cancel.xml", tmp_path, callee)
    try:
        uac = await _caller(calls_edge, caller, callee.extension, "uac_call_480.xml", tmp_path)
        await _all_ok(uac, uas)
    finally:
        routing.double.scripted.clear()
        with contextlib.suppress(ProcessLookupError):
            uas.process.kill()
    await _wait_no_calls(calls_edge)
    call_id = _plan(routing, callee.extension).call.call_id
    [continued] = [c for c in routing.double.continues if c.call.call_id == call_id]
    assert continued.result.dial.status == routing_pb2.DIAL_STATUS_NO_ANSWER
    assert continued.result.dial.ring_duration.ToNanoseconds() >= 0.8e9


async def test_an_unrefreshed_session_timer_ends_the_call(
    calls_edge: RunningEdge, provisioning: Provisioned, routing: RoutingServer, tmp_path: Path
) -> None:
    """RFC 4028 with the caller as refresher: 200 grants Session-Expires: 1;refresher=uac;
    no refresh comes, so about a second later the edge sends BYE to both sides."""
    caller = provisioning.accounts["acme101"]
    callee = await _new_extension(provisioning)
    uas = await _callee(calls_edge, provisioning, "uas_answer.xml", tmp_path, callee)
    try:
        uac = await _caller(calls_edge, caller, callee.extension, "uac_call_timer.xml", tmp_path)
        await _all_ok(uac, uas)
    finally:
        with contextlib.suppress(ProcessLookupError):
            uas.process.kill()
    await _wait_no_calls(calls_edge)
    timeline = _timeline(uac.errors.with_name("uac_messages.log"))
    answered = next(t for t, line in timeline if line.startswith("SIP/2.0 200 OK"))
    bye = next(t for t, line in timeline if line.startswith("BYE "))
    assert 0.9 <= bye - answered < 3.0, timeline
    call_id = _plan(routing, callee.extension).call.call_id
    # The platform ended it: routing is not asked for more.
    assert not [c for c in routing.double.continues if c.call.call_id == call_id]
