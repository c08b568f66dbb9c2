"""In-process routing decisions for a tenant with 1,000,000 LCR prefixes.

Builds the demo tenant (list check, time condition, greeting, IVR, ring groups) plus an LCR
rate index of 1,000,000 prefixes spread over four trunks (shared tariffs, some with
time-of-day bands, one trunk at its channel limit), then times single decisions on one core:

  outbound: a user dials a national or international number; the number is normalised with
            phonenumbers, permission-checked, and routed by longest prefix over all trunks;
  inbound:  `plan` for the demo DID (list, time condition, greeting, menu) and `resume` with
            the caller pressing 2 (ring group plan), each counted as one decision.

Prints `name: value unit` lines; the issue's goal is >= 20,000 decisions/s in-process.
After the build the heap is frozen with `gc.freeze()`, as the routing service does once a
tenant's configuration is loaded: a million long-lived objects would otherwise make every
full collection walk them, which shows up as p99 spikes rather than in the mean.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import time
from datetime import UTC, datetime
from datetime import time as wall_time
from decimal import Decimal
from typing import Any

from callmesh_routing.core.engine import CallContext, LiveView, Origin, plan, resume
from callmesh_routing.core.lcr import LeastCostRouter, Tariff, TimeBand, Trunk
from callmesh_routing.core.tenant import TenantConfig
from callmesh_routing.core.timeconditions import WORKDAYS
from callmesh_routing.core.verbs import GatherResult

DID = "+78123090000"
NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # Monday 10:00 in Moscow: office hours
TRUNK_IDS = ("rostelecom", "mts", "megafon", "intl")
# Number ranges the prefixes are cut from, so that lookups hit deep prefixes.
RANGES = ("7812", "7495", "7916", "7926", "7903", "7343", "7383", "4420", "4930", "3861")


def demo_tenant(lcr: LeastCostRouter) -> TenantConfig:
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
    return TenantConfig.from_dict(data, lcr=lcr)


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


def run(prefixes: int = 1_000_000, decisions: int = 40_000, seed: int = 7) -> dict[str, float]:
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
    return {name: value for name, value, _ in figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prefixes", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=40_000)
    args = parser.parse_args()
    run(args.prefixes, args.decisions)


if __name__ == "__main__":
    main()
