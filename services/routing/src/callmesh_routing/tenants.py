"""Tenants' compiled routing configurations, loaded on first use and refreshed on change.

A tenant's document comes from the api (`Provisioning.GetRoutingConfig`), is compiled once
(lenient loading: a dangling reference degrades one step, not the tenant) and is then only
read by decisions. `callmesh.config.v1` ConfigChanged events for the tenant mark it stale and
start a reload at once, so the next call usually finds the new version ready.

Rules that keep calls flowing:
  * one load per tenant at a time, however many calls ask for it (the others wait on it);
  * a request waits at most its own budget; a load that takes longer keeps going in the
    background (a tenant with a million LCR prefixes takes seconds) and serves later calls;
  * while a stale configuration is being replaced, a request waits for the new one only
    briefly (`STALE_WAIT_SECONDS`) and is then served the previous one rather than delayed;
  * a failed load is remembered for a short while, so a tenant without a configuration does
    not turn every call into another request to the api.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
from callmesh.events.v1 import config_pb2
from callmesh.provisioning.v1 import provisioning_pb2, provisioning_pb2_grpc
from callmesh_core.errors import Unavailable
from callmesh_core.kafka import ConsumedEvent
from callmesh_core.logging import EventLogger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from callmesh_routing.core.document import LoadedDocument, load_document, parse_json
from callmesh_routing.core.loading import LoadError
from callmesh_routing.core.tenant import TenantConfig

# Documents at least this large are compiled in a worker thread (seconds of CPU must not stall
# other tenants' calls) and followed by `gc.freeze()`: a million long-lived objects in the
# collector's generations would make every full collection walk them (p99 spikes).
BIG_DOCUMENT_BYTES = 1 << 20
# How long a request waits for a refresh when it could be served the previous version.
STALE_WAIT_SECONDS = 0.1
# A load that keeps being overtaken by changes settles for what it got after this many tries.
MAX_RELOADS_PER_LOAD = 3


@dataclass(frozen=True, slots=True)
class RoutingDocument:
    tenant_id: str
    document_json: str
    version: int


class DocumentSource(Protocol):
    """Where documents come from (Provisioning in the service)."""

    async def fetch(self, tenant_id: str) -> RoutingDocument: ...


class DocumentUnavailable(Exception):
    """The document could not be fetched or compiled; the message says why."""


class ProvisioningDocuments:
    """`DocumentSource` over the api's `Provisioning.GetRoutingConfig`."""

    def __init__(self, channel: grpc.aio.Channel, timeout_seconds: float) -> None:
        self._stub = provisioning_pb2_grpc.ProvisioningStub(channel)
        self._timeout = timeout_seconds

    async def fetch(self, tenant_id: str) -> RoutingDocument:
        request = provisioning_pb2.GetRoutingConfigRequest(tenant_id=tenant_id)
        try:
            reply = await self._stub.GetRoutingConfig(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.NOT_FOUND:
                raise DocumentUnavailable(
                    f"tenant {tenant_id!r} has no routing configuration"
                ) from None
            raise DocumentUnavailable(
                f"Provisioning.GetRoutingConfig for tenant {tenant_id!r} failed: "
                f"{code.name} {exc.details() or ''}".rstrip()
            ) from None
        return RoutingDocument(reply.tenant_id or tenant_id, reply.document_json, reply.version)


class CacheMetrics:
    """`callmesh_routing_config_*`: how often and how long tenants' documents load."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "callmesh_routing") -> None:
        self.loads = Counter(
            f"{prefix}_config_loads",
            "routing document loads, by outcome (loaded, failed)",
            ["outcome"],
            registry=registry,
        )
        self.load_seconds = Histogram(
            f"{prefix}_config_load_seconds",
            "fetching and compiling one tenant's routing document",
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.tenants = Gauge(
            f"{prefix}_config_tenants",
            "tenants whose configuration this replica holds",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class LoadedTenant:
    tenant_id: str
    version: int
    document: LoadedDocument

    @property
    def config(self) -> TenantConfig:
        return self.document.tenant


def compile_document(document: RoutingDocument) -> LoadedTenant:
    """Parse and compile (CPU-bound: runs in a worker thread for big documents)."""
    data = parse_json(document.document_json)
    loaded = load_document(data, document.tenant_id)
    return LoadedTenant(document.tenant_id, document.version, loaded)


class TenantConfigs:
    """The cache: `get` for requests, `on_config_changed` for the Kafka consumer."""

    def __init__(
        self,
        source: DocumentSource,
        log: EventLogger,
        *,
        retry_after_failure_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: CacheMetrics | None = None,
    ) -> None:
        self._source = source
        self._metrics = metrics
        self._log = log
        self._retry_after = retry_after_failure_seconds
        self._clock = clock
        self._entries: dict[str, LoadedTenant] = {}
        self._stale: set[str] = set()
        self._loading: dict[str, asyncio.Task[LoadedTenant]] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # tenant -> (retry at, why)
        # Bumped by every change event; a load that saw its tenant's generation move while it
        # ran loads again, so a change published mid-load is never lost.
        self._generation: dict[str, int] = {}
        self._newest_seen: dict[str, int] = {}  # highest document version announced

    async def get(self, tenant_id: str, wait_seconds: float) -> LoadedTenant:
        """The tenant's configuration; `Unavailable` if none can be had within the wait."""
        entry = self._entries.get(tenant_id)
        if entry is not None and tenant_id not in self._stale:
            return entry
        failed = self._failed.get(tenant_id)
        if failed is not None and failed[0] > self._clock():
            if entry is not None:
                return entry  # the refresh failed a moment ago: keep serving what we have
            raise Unavailable(failed[1])
        task = self._start_load(tenant_id)
        if entry is not None:
            # A refresh is under way and the previous version is at hand: wait only briefly,
            # so a big tenant's reload (seconds) does not hold up each of its calls.
            wait_seconds = min(wait_seconds, STALE_WAIT_SECONDS)
        try:
            return await asyncio.wait_for(asyncio.shield(task), max(wait_seconds, 0.0))
        except TimeoutError:
            if entry is not None:
                self._log.debug("routing_config_stale_served", tenant_id=tenant_id)
                return entry
            raise Unavailable(
                f"routing configuration of tenant {tenant_id!r} not loaded within "
                f"{wait_seconds:.2f}s; still loading"
            ) from None
        except DocumentUnavailable as exc:
            if entry is not None:
                self._log.warning(
                    "routing_config_stale_served", tenant_id=tenant_id, error=str(exc)
                )
                return entry
            raise Unavailable(str(exc)) from None

    def _holds(self, tenant_id: str) -> bool:
        return tenant_id in self._entries or tenant_id in self._loading or tenant_id in self._failed

    def invalidate(self, tenant_id: str, version: int | None = None) -> bool:
        """The tenant's document changed (to `version`, when known): reload it now.

        Returns whether this replica held anything of the tenant (most events are for tenants
        it never served, e.g. when a new replica reads the topic from the start).
        """
        if not self._holds(tenant_id):
            return False
        if version is not None:
            self._newest_seen[tenant_id] = max(version, self._newest_seen.get(tenant_id, 0))
            entry = self._entries.get(tenant_id)
            if entry is not None and entry.version >= version and tenant_id not in self._stale:
                return False  # a redelivered or older event: what is cached is as new
        self._generation[tenant_id] = self._generation.get(tenant_id, 0) + 1
        self._failed.pop(tenant_id, None)
        if tenant_id in self._entries:
            self._stale.add(tenant_id)
            self._start_load(tenant_id)  # refresh eagerly; calls meanwhile may serve the old one
        return True

    def forget(self, tenant_id: str) -> bool:
        """The tenant is gone: drop its configuration; whether anything was held."""
        if not self._holds(tenant_id):
            return False
        self._generation[tenant_id] = self._generation.get(tenant_id, 0) + 1
        self._entries.pop(tenant_id, None)
        self._stale.discard(tenant_id)
        self._failed.pop(tenant_id, None)
        self._newest_seen.pop(tenant_id, None)
        if self._metrics is not None:
            self._metrics.tenants.set(len(self._entries))
        return True

    async def on_config_changed(self, event: ConsumedEvent[config_pb2.ConfigChanged]) -> None:
        """Kafka handler for `callmesh.config.v1`.

        The routing document is announced as CONFIG_KIND_SCENARIO with its version; a tenant
        change may touch what the document means (or delete the tenant). Other kinds are
        resources routing does not read.
        """
        change = event.message
        if change.kind == config_pb2.CONFIG_KIND_TENANT:
            if change.deleted:
                affected = self.forget(change.tenant_id)
            else:
                affected = self.invalidate(change.tenant_id)
        elif change.kind == config_pb2.CONFIG_KIND_SCENARIO:
            affected = self.invalidate(change.tenant_id, change.version or None)
        else:
            affected = False
        if affected:
            self._log.info(
                "routing_config_invalidated",
                tenant_id=change.tenant_id,
                kind=config_pb2.ConfigKind.Name(change.kind),
                version=change.version,
            )

    # -- loading -----------------------------------------------------------------------------

    def _start_load(self, tenant_id: str) -> asyncio.Task[LoadedTenant]:
        task = self._loading.get(tenant_id)
        if task is None:
            task = asyncio.create_task(self._load(tenant_id), name=f"routing-config-{tenant_id}")
            self._loading[tenant_id] = task
            task.add_done_callback(lambda done: self._load_done(tenant_id, done))
        return task

    def _load_done(self, tenant_id: str, task: asyncio.Task[LoadedTenant]) -> None:
        if self._loading.get(tenant_id) is task:
            del self._loading[tenant_id]
        if not task.cancelled():
            task.exception()  # retrieved here, so a load nobody awaited logs no warning

    async def _load(self, tenant_id: str) -> LoadedTenant:
        for attempt in range(1, MAX_RELOADS_PER_LOAD + 1):
            generation = self._generation.get(tenant_id, 0)
            started = time.perf_counter()
            try:
                document = await self._source.fetch(tenant_id)
                fetched = time.perf_counter()
                if len(document.document_json) >= BIG_DOCUMENT_BYTES:
                    # Seconds of CPU for big rate tables: off the event loop, so other
                    # tenants' calls keep being answered meanwhile.
                    loaded = await asyncio.to_thread(compile_document, document)
                else:
                    loaded = compile_document(document)
            except (DocumentUnavailable, LoadError) as exc:
                why = str(exc)
                if isinstance(exc, LoadError):
                    why = f"routing configuration of tenant {tenant_id!r} is unusable: {why}"
                self._failed[tenant_id] = (self._clock() + self._retry_after, why)
                if self._metrics is not None:
                    self._metrics.loads.labels("failed").inc()
                self._log.warning("routing_config_load_failed", tenant_id=tenant_id, error=why)
                raise DocumentUnavailable(why) from None
            if len(document.document_json) >= BIG_DOCUMENT_BYTES:
                # The new configuration lives until the next change: move it (and everything
                # else alive now) out of the collector's way.
                gc.freeze()
            changed_meanwhile = self._generation.get(tenant_id, 0) != generation
            behind = loaded.version < self._newest_seen.get(tenant_id, 0)
            if generation == self._generation.get(tenant_id, 0) or tenant_id in self._entries:
                self._entries[tenant_id] = loaded
            self._failed.pop(tenant_id, None)
            if self._metrics is not None:
                self._metrics.loads.labels("loaded").inc()
                self._metrics.load_seconds.observe(time.perf_counter() - started)
                self._metrics.tenants.set(len(self._entries))
            self._log.info(
                "routing_config_loaded",
                tenant_id=tenant_id,
                version=loaded.version,
                bytes=len(document.document_json),
                lcr_prefixes=loaded.document.rate_count,
                tolerated_problems=len(loaded.document.skipped),
                fetch_ms=round((fetched - started) * 1000, 1),
                compile_ms=round((time.perf_counter() - fetched) * 1000, 1),
            )
            if not (changed_meanwhile or behind) or attempt == MAX_RELOADS_PER_LOAD:
                self._stale.discard(tenant_id)
                return loaded
        raise AssertionError("unreachable")  # the loop always returns or raises
