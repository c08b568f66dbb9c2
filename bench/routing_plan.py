"""Routing decisions for a tenant with 1,000,000 LCR prefixes, in-process and over gRPC.

Builds the demo tenant (list check, time condition, greeting, IVR, ring groups) plus an LCR
rate index of 1,000,000 prefixes spread over four trunks (shared tariffs, some with
time-of-day bands, one trunk at its channel limit), then times single decisions on one core:

  outbound: a user dials a national or international number; the number is normalised with
            phonenumbers, permission-checked, and routed by longest prefix over all trunks;
  inbound:  `plan` for the demo DID (list, time condition, greeting, menu) and `resume` with
            the caller pressing 2 (ring group plan), each counted as one decision.

Then the same mix over gRPC (`routing_plan_grpc*`): routing's servicer in a separate process,
loading the tenant's whole routing document (JSON, tens of MB with the rate table) through
`Provisioning.GetRoutingConfig` served from this process, answering `Plan`/`Continue` as the
service does (interceptors, structured log line per decision).

Prints `name: value unit` lines; the issue's goals are >= 20,000 decisions/s in-process and a
p99 under 2 ms over gRPC.
After the build the heap is frozen with `gc.freeze()`, as the routing service does once a
tenant's configuration is loaded: a million long-lived objects would otherwise make every
full collection walk them, which shows up as p99 spikes rather than in the mean.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from datetime import time as wall_time
from decimal import Decimal
from typing import Any

import grpc
import uvloop
from callmesh.common.v1 import common_pb2
from callmesh.provisioning.v1 import provisioning_pb2, provisioning_pb2_grpc
from callmesh.routing.v1 import routing_pb2, routing_pb2_grpc
from callmesh_core.grpc_server import GrpcServer, create_channel
from callmesh_core.logging import configure_logging
from callmesh_core.telemetry import Telemetry
from callmesh_routing.core.engine import CallContext, LiveView, Origin, plan, resume
from callmesh_routing.core.lcr import LeastCostRouter, Tariff, TimeBand, Trunk
from callmesh_routing.core.tenant import TenantConfig
from callmesh_routing.core.timeconditions import WORKDAYS
from callmesh_routing.core.verbs import GatherResult
from callmesh_routing.icm_sources import IcmPrefetch
from callmesh_routing.servicer import RoutingServicer
from callmesh_routing.tenants import ProvisioningDocuments, TenantConfigs
from prometheus_client import CollectorRegistry

DID = "+78123090000"
NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # Monday 10:00 in Moscow: office hours
TRUNK_IDS = ("rostelecom", "mts", "megafon", "intl")
# Number ranges the prefixes are cut from, so that lookups hit deep prefixes.
RANGES = ("7812", "7495", "7916", "7926", "7903", "7343", "7383", "4420", "4930", "3861")


def demo_document() -> dict[str, Any]:
    """The demo tenant's routing document without its LCR section."""
    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    data: dict[str, Any] = {
        "tenant_id": "bench",
        "default_scenario": "fallback",
        "numbering": {"default_region": "RU", "local_prefixes": ["7812"]},
        "inbound": {DID: "main"},
        "directory": {
            "users": [
                {"extension": "101", "mailbox": "101", "permission": "international"},
                {"extension": "102", "mailbox": "102"},
                {"extension": "103"},
                {"extension": "104"},
            ],
            "ring_groups": [
                {"name": "support", "members": ["103", "104"], "strategy": "sequential"},
            ],
            "mailboxes": ["general"],
            "time_conditions": [
                {
                    "name": "office-hours",
                    "timezone": "Europe/Moscow",
                    "weekly": [
                        {"name": "weekdays", "days": weekdays, "start": "09:00", "end": "18:00"}
                    ],
                    "holidays": {"country": "RU"},
                }
            ],
            "lists": [{"name": "blacklist", "entries": [{"mask": "7900", "action": "block"}]}],
        },
        "scenarios": [
            {
                "id": "main",
                "start": "screen",
                "steps": {
                    "screen": {"kind": "list_check", "list": "blacklist", "next": "hours"},
                    "hours": {
                        "kind": "time_condition",
                        "condition": "office-hours",
                        "match": "welcome",
                        "no_match": "voicemail",
                    },
                    "welcome": {"kind": "greeting", "prompt": "welcome", "next": "menu"},
                    "menu": {
                        "kind": "menu",
                        "prompt": "main-menu",
                        "options": {"1": "reception", "2": "support"},
                        "extension_dialing": True,
                    },
                    "reception": {"kind": "extension", "extension": "101"},
                    "support": {"kind": "ring_group", "group": "support"},
                    "voicemail": {"kind": "voicemail", "mailbox": "general"},
                },
            },
            {
                "id": "fallback",
                "start": "leave",
                "steps": {"leave": {"kind": "voicemail", "mailbox": "general"}},
            },
        ],
    }
    return data


def demo_tenant(lcr: LeastCostRouter) -> TenantConfig:
    return TenantConfig.from_dict(demo_document(), lcr=lcr)


def rate_rows(count: int, rng: random.Random) -> list[tuple[str, str, Tariff]]:
    """`count` distinct prefixes (5 to 10 digits) over the four trunks, shared tariffs.

    Every eighth prefix is also offered by a second trunk, so lookups compare prices.
    """
    tariffs = [Tariff(Decimal(rng.randrange(5, 400)) / 100) for _ in range(48)]
    evening = TimeBand(WORKDAYS, wall_time(19), wall_time(8), Decimal("0.05"))
    tariffs += [Tariff(Decimal(rng.randrange(20, 300)) / 100, (evening,)) for _ in range(16)]
    rows: list[tuple[str, str, Tariff]] = []
    seen: set[str] = set()
    # Longer prefixes are far more numerous in real rate decks; weight lengths that way.
    lengths = (5, 6, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10)
    while len(seen) < count:
        head = RANGES[rng.randrange(len(RANGES))]
        tail = lengths[rng.randrange(len(lengths))] - len(head)
        prefix = head + str(rng.randrange(10**tail, 2 * 10**tail))[1:]
        if prefix in seen:
            continue
        seen.add(prefix)
        trunk = rng.randrange(len(TRUNK_IDS))
        rows.append((TRUNK_IDS[trunk], prefix, tariffs[rng.randrange(len(tariffs))]))
        if len(seen) % 8 == 0:
            other = (trunk + 1) % len(TRUNK_IDS)
            rows.append((TRUNK_IDS[other], prefix, tariffs[rng.randrange(len(tariffs))]))
    return rows


def dialled_numbers(count: int, rng: random.Random) -> list[str]:
    """Distinct numbers as users dial them: "8..." within Russia, "810..." abroad."""
    national = ("812", "495", "916", "926", "903", "343", "383")
    numbers: set[str] = set()
    while len(numbers) < count:
        if len(numbers) % 5 == 4:
            numbers.add(f"81044 20 7{rng.randrange(10**6, 10**7)}")
        else:
            area = national[len(numbers) % len(national)]
            numbers.add(f"8{area}{rng.randrange(10**6, 10**7)}")
    return sorted(numbers, key=lambda _: rng.random())


def caller_numbers(count: int, rng: random.Random) -> list[str]:
    """Distinct outside callers in E.164, as trunks present them."""
    callers: set[str] = set()
    while len(callers) < count:
        callers.add(f"+7916{rng.randrange(10**6, 10**7)}")
    return list(callers)


def percentile(sorted_ns: list[int], fraction: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * fraction))] / 1e6


class Timings:
    """Per-decision wall-clock and on-CPU nanoseconds, by kind of decision."""

    def __init__(self) -> None:
        self.wall: dict[str, list[int]] = {"outbound": [], "inbound": []}
        self.cpu: dict[str, list[int]] = {"outbound": [], "inbound": []}

    def all(self, clock: str) -> list[int]:
        source = self.wall if clock == "wall" else self.cpu
        return sorted(source["outbound"] + source["inbound"])


def measure(
    tenant: TenantConfig, live: LiveView, dialled: list[str], callers: list[str], decisions: int
) -> Timings:
    """Alternate outbound plans with inbound plan/resume pairs, timing each decision.

    Both clocks are read: wall time is what a caller waits (on a shared machine it includes
    being descheduled), thread CPU time is what the decision costs one core.
    """
    timings = Timings()
    wall_clock = time.perf_counter_ns
    cpu_clock = time.thread_time_ns
    pressed_two = GatherResult("2")
    state = ""
    for index in range(decisions // 2):
        number = dialled[index % len(dialled)]
        call = CallContext("out", Origin.USER, "101", number, "101")
        c0, w0 = cpu_clock(), wall_clock()
        plan(tenant, call, NOW, live)
        w1, c1 = wall_clock(), cpu_clock()
        timings.wall["outbound"].append(w1 - w0)
        timings.cpu["outbound"].append(c1 - c0)
        caller = callers[(index // 2) % len(callers)]
        inbound = CallContext("in", Origin.TRUNK, caller, DID)
        c0, w0 = cpu_clock(), wall_clock()
        if index % 2 == 0:
            state = plan(tenant, inbound, NOW, live).state
        else:
            resume(tenant, inbound, NOW, live, state, pressed_two)
        w1, c1 = wall_clock(), cpu_clock()
        timings.wall["inbound"].append(w1 - w0)
        timings.cpu["inbound"].append(c1 - c0)
    return timings


def run(
    prefixes: int = 1_000_000, decisions: int = 40_000, seed: int = 7, grpc_decisions: int = 20_000
) -> dict[str, float]:
    rng = random.Random(seed)
    rows = rate_rows(prefixes, rng)
    trunks = [
        Trunk("rostelecom", channel_limit=60, timezone="Europe/Moscow"),
        Trunk("mts", channel_limit=30, timezone="Europe/Moscow", selection_prefix="*55"),
        Trunk("megafon", channel_limit=30, timezone="Europe/Moscow"),
        Trunk("intl", timezone="UTC"),
    ]
    started = time.perf_counter()
    lcr = LeastCostRouter.build(trunks, rows)
    build_s = time.perf_counter() - started
    # The same tenant as the api would store it, for the over-gRPC figures below.
    document_json = routing_document_json(trunks, rows)
    del rows
    tenant = demo_tenant(lcr)
    live = LiveView(trunk_channels={"megafon": 30, "rostelecom": 12})  # megafon is full

    # Cold: every dialled number and every caller is new, so each decision parses its
    # numbers with phonenumbers. Warm: the same numbers again (the tenant's memo holds
    # them), which is what repeat callers and customers called again cost.
    half = decisions // 2
    dialled = dialled_numbers(half, rng)
    callers = caller_numbers(half // 2 + 1, rng)
    measure(tenant, live, dialled_numbers(500, random.Random(seed + 1)), ["+74951234567"], 1000)
    gc.collect()
    gc.freeze()
    cold = measure(tenant, live, dialled, callers, decisions)
    warm = measure(tenant, live, dialled, callers, decisions)
    gc.unfreeze()

    def rate(timings: Timings, clock: str) -> float:
        spent = timings.all(clock)
        return len(spent) / (sum(spent) / 1e9)

    check = plan(tenant, CallContext("c", Origin.USER, "101", dialled[0], "101"), NOW, live)
    figures: list[tuple[str, float, str]] = [
        ("routing_plan_lcr_prefixes", float(len(lcr.rates)), "prefixes"),
        ("routing_plan_lcr_build", build_s, "s"),
        # Headline: cold numbers, decisions per second of one core's CPU time.
        ("routing_plan_inprocess", rate(cold, "cpu"), "decisions/s"),
        ("routing_plan_inprocess_p99", percentile(cold.all("wall"), 0.99), "ms"),
        ("routing_plan_inprocess_p50", percentile(cold.all("wall"), 0.50), "ms"),
        ("routing_plan_inprocess_cpu_p99", percentile(cold.all("cpu"), 0.99), "ms"),
        ("routing_plan_inprocess_wall", rate(cold, "wall"), "decisions/s"),
        (
            "routing_plan_inprocess_outbound_cpu_p99",
            percentile(sorted(cold.cpu["outbound"]), 0.99),
            "ms",
        ),
        (
            "routing_plan_inprocess_inbound_cpu_p99",
            percentile(sorted(cold.cpu["inbound"]), 0.99),
            "ms",
        ),
        ("routing_plan_inprocess_warm", rate(warm, "cpu"), "decisions/s"),
        ("routing_plan_inprocess_warm_p99", percentile(warm.all("wall"), 0.99), "ms"),
        ("routing_plan_inprocess_warm_cpu_p99", percentile(warm.all("cpu"), 0.99), "ms"),
    ]
    for name, value, unit in figures:
        shown = f"{value:.0f}" if unit in ("decisions/s", "prefixes") else f"{value:.3f}"
        print(f"{name}: {shown} {unit}", flush=True)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"# load average during the run: {load} (wall-clock figures include contention)")
    print(f"# sample outbound decision: {check.reason}", flush=True)
    results = {name: value for name, value, _ in figures}
    del tenant, lcr
    gc.collect()
    if grpc_decisions > 0:
        results |= run_grpc(document_json, dialled, callers, grpc_decisions)
    return results


# -- over gRPC --------------------------------------------------------------------------------
#
# The routing servicer runs in a separate process (uvloop, the core's GrpcServer with its
# tracing, metrics and error-mapping interceptors, structured logging of every decision, as in
# the service) and loads the tenant through Provisioning.GetRoutingConfig from this process,
# which serves the whole routing document: the demo tenant plus its 1,000,000-prefix LCR.
# Figures: one request at a time (latency: what one call waits), eight in flight (throughput
# of the pair on this 2-core machine, the client included), and the server's own CPU time
# per decision (decisions per second of one core).

GRPC_TENANT = "bench"
IN_FLIGHT = 8


def routing_document_json(trunks: list[Trunk], rows: list[tuple[str, str, Tariff]]) -> str:
    """The demo tenant with its LCR as a routing document (see core/document.py), as JSON.

    Flat tariffs are written as prices and banded ones by name, which is how a real deck looks
    (a few hundred prices over millions of prefixes).
    """
    names: dict[int, str] = {}
    tariffs: dict[str, Any] = {}
    rates: dict[str, dict[str, object]] = {trunk.id: {} for trunk in trunks}
    for trunk_id, prefix, tariff in rows:
        if not tariff.bands:
            rates[trunk_id][prefix] = float(tariff.price)
            continue
        name = names.get(id(tariff))
        if name is None:
            name = names[id(tariff)] = f"banded-{len(names)}"
            tariffs[name] = {
                "price": str(tariff.price),
                "bands": [
                    {
                        "days": [day.value for day in band.days],
                        "start": band.start.strftime("%H:%M"),
                        "end": band.end.strftime("%H:%M"),
                        "price": str(band.price),
                    }
                    for band in tariff.bands
                ],
            }
        rates[trunk_id][prefix] = name
    document = demo_document()
    document["lcr"] = {
        "trunks": [
            {
                "id": trunk.id,
                "channel_limit": trunk.channel_limit,
                "timezone": trunk.timezone,
                "selection_prefix": trunk.selection_prefix,
                "preference": trunk.preference,
            }
            for trunk in trunks
        ],
        "tariffs": tariffs,
        "rates": rates,
    }
    return json.dumps(document, separators=(",", ":"))


def serve_grpc() -> None:
    """The server process: reads Provisioning's host:port from stdin, serves routing on a free
    port and prints it on stdout, stops on SIGTERM.

    Started before the parent runs any gRPC (hence the address over stdin): forking a process
    whose gRPC threads are busy is something gRPC warns about.
    """
    provisioning_address = sys.stdin.readline().strip()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_grpc(provisioning_address))


async def _serve_grpc(provisioning_address: str) -> None:
    log = configure_logging(service="routing", replica="bench")
    telemetry = Telemetry(service_name="routing", replica_id="bench")
    tracer = telemetry.tracer("callmesh.routing")
    channel = create_channel(
        provisioning_address,
        tracer=tracer,
        default_timeout=2.0,
        options=[("grpc.max_receive_message_length", 512 * 1024 * 1024)],
    )
    tenants = TenantConfigs(ProvisioningDocuments(channel, 300.0), log.child("tenants"))
    servicer = RoutingServicer(
        tenants,
        IcmPrefetch(None, None, log.child("icm")),
        log.child("decisions"),
        config_wait_seconds=300.0,
        clock=lambda: NOW,  # the in-process figures' moment: office hours, same paths
    )
    server = GrpcServer(
        host="127.0.0.1",
        port=0,
        tracer=tracer,
        log=log,
        metrics=CollectorRegistry(),
        metric_prefix="callmesh_routing",
    )
    server.add(
        routing_pb2_grpc.add_RoutingServicer_to_server, servicer, "callmesh.routing.v1.Routing"
    )
    port = await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)
    await channel.close()


class BenchProvisioning(provisioning_pb2_grpc.ProvisioningServicer):
    """Serves the one routing document (the api's side of GetRoutingConfig, for the bench).

    Only GetRoutingConfig is implemented; the rest of Provisioning is the api's.
    """

    def __init__(self, document_json: str) -> None:
        self.document_json = document_json

    async def GetRoutingConfig(
        self, request: provisioning_pb2.GetRoutingConfigRequest, context: Any
    ) -> provisioning_pb2.RoutingConfig:
        return provisioning_pb2.RoutingConfig(
            tenant_id=request.tenant_id, document_json=self.document_json, version=1
        )


def _outbound(index: int, number: str) -> routing_pb2.PlanRequest:
    return routing_pb2.PlanRequest(
        call=routing_pb2.CallContext(
            call_id=f"out-{index}",
            tenant_id=GRPC_TENANT,
            direction=common_pb2.CALL_DIRECTION_OUTBOUND,
            caller_number="101",
            caller_extension="101",
            callee_number=number,
        )
    )


def _inbound(index: int, caller: str) -> routing_pb2.CallContext:
    return routing_pb2.CallContext(
        call_id=f"in-{index}",
        tenant_id=GRPC_TENANT,
        direction=common_pb2.CALL_DIRECTION_INBOUND,
        caller_number=caller,
        callee_number=DID,
        did=DID,
    )


PRESSED_TWO = routing_pb2.VerbResult(
    gather=routing_pb2.GatherResult(status=routing_pb2.GATHER_STATUS_INPUT, digits="2")
)


async def _decisions(
    stub: routing_pb2_grpc.RoutingAsyncStub,
    dialled: list[str],
    callers: list[str],
    indexes: range,
    latencies: list[int],
) -> None:
    """The in-process mix over gRPC: an outbound plan, then an inbound plan or its Continue."""
    clock = time.perf_counter_ns
    state = b""
    for index in indexes:
        t0 = clock()
        await stub.Plan(_outbound(index, dialled[index % len(dialled)]), timeout=5)
        t1 = clock()
        call = _inbound(index // 2, callers[(index // 2) % len(callers)])
        if index % 2 == 0:
            state = (await stub.Plan(routing_pb2.PlanRequest(call=call), timeout=5)).state
        else:
            request = routing_pb2.ContinueRequest(call=call, state=state, result=PRESSED_TWO)
            await stub.Continue(request, timeout=5)
        t2 = clock()
        latencies += (t1 - t0, t2 - t1)


def _process_cpu_seconds(pid: int) -> float:
    # utime and stime (fields 14 and 15) of every thread of the process, in clock ticks.
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_grpc(
    document_json: str, dialled: list[str], callers: list[str], decisions: int
) -> dict[str, float]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run_grpc(document_json, dialled, callers, decisions))


async def _run_grpc(
    document_json: str, dialled: list[str], callers: list[str], decisions: int
) -> dict[str, float]:
    with tempfile.TemporaryFile("w+") as server_log:
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve-grpc",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=server_log,
        )
        provisioning = grpc.aio.server()
        provisioning_pb2_grpc.add_ProvisioningServicer_to_server(
            BenchProvisioning(document_json),  # type: ignore[abstract]  # one method is enough
            provisioning,
        )
        provisioning_port = provisioning.add_insecure_port("127.0.0.1:0")
        await provisioning.start()
        try:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(f"127.0.0.1:{provisioning_port}\n".encode())
            await server.stdin.drain()
            port = int((await server.stdout.readline()).decode() or "0")
            if not port:
                raise SystemExit("routing_plan: the gRPC server process did not start")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = routing_pb2_grpc.RoutingStub(channel)
                started = time.perf_counter()
                first = await stub.Plan(
                    routing_pb2.PlanRequest(call=_inbound(0, callers[0])), timeout=300
                )
                first_plan_s = time.perf_counter() - started
                await _decisions(stub, dialled[-500:], callers[-500:], range(500), [])  # warm-up

                one_at_a_time: list[int] = []
                cpu_before = _process_cpu_seconds(server.pid)
                started = time.perf_counter()
                await _decisions(stub, dialled, callers, range(decisions // 2), one_at_a_time)
                sequential_s = time.perf_counter() - started
                server_cpu_s = _process_cpu_seconds(server.pid) - cpu_before

                loaded: list[int] = []
                per_worker = decisions // 2 // IN_FLIGHT
                started = time.perf_counter()
                await asyncio.gather(
                    *(
                        _decisions(
                            stub,
                            dialled,
                            callers,
                            range(w * per_worker, (w + 1) * per_worker),
                            loaded,
                        )
                        for w in range(IN_FLIGHT)
                    )
                )
                in_flight_s = time.perf_counter() - started
        finally:
            server.send_signal(signal.SIGTERM)
            await server.wait()
            await provisioning.stop(0)
        server_log.seek(0)
        load_line = next((line for line in server_log if "routing_config_loaded" in line), "")
    compile_ms = re.search(r"compile_ms=([\d.]+)", load_line)
    one_at_a_time.sort()
    loaded.sort()
    figures: list[tuple[str, float, str]] = [
        ("routing_plan_grpc_document", len(document_json) / 1e6, "MB"),
        (
            "routing_plan_grpc_config_compile",
            float(compile_ms[1]) / 1000 if compile_ms else -1,
            "s",
        ),
        ("routing_plan_grpc_first_plan", first_plan_s, "s"),
        # Headline: eight calls in flight, decisions per second of wall time (client and
        # server share this machine's two cores).
        ("routing_plan_grpc", len(loaded) / in_flight_s, "decisions/s"),
        # One request at a time: the latency one call sees.
        ("routing_plan_grpc_p99", percentile(one_at_a_time, 0.99), "ms"),
        ("routing_plan_grpc_p50", percentile(one_at_a_time, 0.50), "ms"),
        ("routing_plan_grpc_sequential", len(one_at_a_time) / sequential_s, "decisions/s"),
        # The server process's CPU per decision: decisions per second of one core.
        ("routing_plan_grpc_server_cpu", len(one_at_a_time) / server_cpu_s, "decisions/s"),
        (f"routing_plan_grpc_in_flight{IN_FLIGHT}_p99", percentile(loaded, 0.99), "ms"),
    ]
    for name, value, unit in figures:
        shown = f"{value:.0f}" if unit == "decisions/s" else f"{value:.3f}"
        print(f"{name}: {shown} {unit}", flush=True)
    print(f"# first gRPC plan: {first.reason}", flush=True)
    return {name: value for name, value, _ in figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prefixes", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=40_000)
    parser.add_argument(
        "--grpc-decisions", type=int, default=20_000, help="0 = skip the over-gRPC figures"
    )
    parser.add_argument("--serve-grpc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # gRPC's C core logs at INFO to stderr (e.g. about starting the server process while its
    # threads run); as in the services, only its errors are wanted. Read when gRPC starts.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if args.serve_grpc:
        serve_grpc()
        return
    run(args.prefixes, args.decisions, grpc_decisions=args.grpc_decisions)


if __name__ == "__main__":
    main()
