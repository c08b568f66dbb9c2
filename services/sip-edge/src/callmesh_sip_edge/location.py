"""The location store: registered contacts in PostgreSQL (schema `sip_edge`), cached in memory.

Every replica shares the table, so a phone may register through one replica and be called
through another. Each change runs in one transaction that

- serialises on the address of record (a transaction-scoped advisory lock, so two REGISTERs for
  one extension on two replicas cannot interleave),
- changes the bindings,
- writes the presence events (registered, unregistered, expired) to `presence_outbox`, which
  the outbox relay publishes to `callmesh.presence.v1` keyed by `<tenant_id>/<extension>`,
- and NOTIFYs `sip_edge_location` with the address of record, so that every replica drops that
  entry from its cache; the next lookup reads through to PostgreSQL.

Expired bindings are swept periodically (:meth:`LocationStore.sweep_expired`); several replicas
may sweep at once (`FOR UPDATE SKIP LOCKED`), each row is expired, and announced, once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from callmesh.events.v1 import presence_pb2
from callmesh_core.logging import EventLogger
from callmesh_core.outbox import OutboxEvent
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from .registrar import Binding, RegisterPlan

PRESENCE_TOPIC = "callmesh.presence.v1"
NOTIFY_CHANNEL = "sip_edge_location"
PRESENCE_NOTIFY_CHANNEL = "sip_edge_presence_outbox"
PRESENCE_RELAY_LOCK = 0x53_45_50_52  # "SEPR": one presence relay at a time
_AOR_LOCK_SPACE = 0x53_45_4C_43  # "SELC": address-of-record locks

Aor = tuple[str, str]  # (tenant_id, extension)


def presence_key(tenant_id: str, extension: str) -> str:
    return f"{tenant_id}/{extension}"


def presence_outbox_event(row: Any) -> OutboxEvent:
    """The outbox row as it goes to Kafka (its event id was fixed when it was written)."""
    message = presence_pb2.PresenceEvent.FromString(bytes(row["payload"]))
    return OutboxEvent(PRESENCE_TOPIC, message, row["event_key"], row["event_id"])


@dataclass(frozen=True, slots=True)
class RegistrationSource:
    """Where a REGISTER came from (the flow a call to this contact should use)."""

    transport: str
    host: str
    port: int
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class StoredBinding:
    contact_uri: str
    expires_at: float
    q: float | None
    transport: str
    host: str
    port: int
    replica: str
    user_id: str

    def as_binding(self) -> Binding:
        return Binding(self.contact_uri, self.expires_at, self.q)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    bindings: list[StoredBinding]
    registered: int
    removed: int


def _binding(row: Any) -> StoredBinding:
    return StoredBinding(
        contact_uri=row["contact_uri"],
        expires_at=row["expires_at"].timestamp(),
        q=row["q"],
        transport=row["source_transport"],
        host=row["source_host"],
        port=row["source_port"],
        replica=row["replica"],
        user_id=row["user_id"],
    )


class LocationStore:
    """Bindings per (tenant id, extension); one per replica, sharing one PostgreSQL schema."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        replica: str,
        log: EventLogger,
        cache_size: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.replica = replica
        self.log = log
        self._clock = clock
        self._cache: dict[Aor, list[StoredBinding]] = {}
        self._cache_size = cache_size
        self._listener: asyncpg.Connection | None = None
        self.cache_hits = 0
        self.cache_misses = 0

    # -- cache coherence -------------------------------------------------------------------

    async def start(self) -> None:
        self._listener = await self.pool.acquire()
        await self._listener.add_listener(NOTIFY_CHANNEL, self._notified)

    async def stop(self) -> None:
        if self._listener is not None:
            try:
                await self._listener.remove_listener(NOTIFY_CHANNEL, self._notified)
            finally:
                await self.pool.release(self._listener)
                self._listener = None

    def _notified(self, connection: object, pid: int, channel: str, payload: str) -> None:
        tenant_id, _, extension = payload.partition("/")
        self._cache.pop((tenant_id, extension), None)

    # -- reads -----------------------------------------------------------------------------

    async def lookup(self, tenant_id: str, extension: str) -> list[StoredBinding]:
        """Unexpired bindings of an address of record, best q first."""
        now = self._clock()
        key = (tenant_id, extension)
        cached = self._cache.get(key)
        if cached is None:
            self.cache_misses += 1
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT * FROM registrations WHERE tenant_id = $1 AND extension = $2",
                    tenant_id,
                    extension,
                )
            cached = [_binding(row) for row in rows]
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = cached
        else:
            self.cache_hits += 1
        live = [b for b in cached if b.expires_at > now]
        live.sort(key=lambda b: -(b.q if b.q is not None else 1.0))
        return live

    # -- writes ----------------------------------------------------------------------------

    async def apply(
        self,
        *,
        tenant_id: str,
        extension: str,
        user_id: str,
        plan: RegisterPlan,
        source: RegistrationSource,
        max_contacts: int,
    ) -> ApplyResult:
        """Apply one REGISTER's plan atomically, with its presence events; the bindings after."""
        events: list[presence_pb2.PresenceEvent] = []
        registered = removed = 0
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                _AOR_LOCK_SPACE,
                presence_key(tenant_id, extension),
            )
            rows = await conn.fetch(
                "SELECT * FROM registrations WHERE tenant_id = $1 AND extension = $2"
                " AND expires_at > now() ORDER BY expires_at",
                tenant_id,
                extension,
            )
            existing = {row["contact_uri"]: row for row in rows}
            if plan.remove_all:
                for uri in existing:
                    removed += 1
                    events.append(self._unregistered(tenant_id, extension, user_id, uri))
                await conn.execute(
                    "DELETE FROM registrations WHERE tenant_id = $1 AND extension = $2",
                    tenant_id,
                    extension,
                )
                existing = {}
            for change in plan.changes:
                if change.expires == 0:
                    if change.contact_uri in existing:
                        del existing[change.contact_uri]
                        removed += 1
                        await conn.execute(
                            "DELETE FROM registrations WHERE tenant_id = $1 AND extension = $2"
                            " AND contact_uri = $3",
                            tenant_id,
                            extension,
                            change.contact_uri,
                        )
                        events.append(
                            self._unregistered(tenant_id, extension, user_id, change.contact_uri)
                        )
                    continue
                refresh = change.contact_uri in existing
                row = await conn.fetchrow(
                    """
                    INSERT INTO registrations (tenant_id, extension, contact_uri, user_id,
                        instance_id, q, call_id, cseq, expires_at, source_transport,
                        source_host, source_port, user_agent, replica)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                        now() + make_interval(secs => $9), $10, $11, $12, $13, $14)
                    ON CONFLICT (tenant_id, extension, contact_uri) DO UPDATE SET
                        user_id = EXCLUDED.user_id, instance_id = EXCLUDED.instance_id,
                        q = EXCLUDED.q, call_id = EXCLUDED.call_id, cseq = EXCLUDED.cseq,
                        expires_at = EXCLUDED.expires_at,
                        source_transport = EXCLUDED.source_transport,
                        source_host = EXCLUDED.source_host,
                        source_port = EXCLUDED.source_port,
                        user_agent = EXCLUDED.user_agent, replica = EXCLUDED.replica,
                        registered_at = now()
                    RETURNING *
                    """,
                    tenant_id,
                    extension,
                    change.contact_uri,
                    user_id,
                    change.instance_id,
                    change.q,
                    plan.call_id,
                    plan.cseq,
                    float(change.expires),
                    source.transport,
                    source.host,
                    source.port,
                    source.user_agent,
                    self.replica,
                )
                existing[change.contact_uri] = row
                registered += 1
                events.append(
                    self._registered(
                        tenant_id, extension, user_id, change.contact_uri, change, source, refresh
                    )
                )
            # Over the limit: the bindings closest to expiry make room (a phone that moved to
            # a new address re-registers with a new contact before its old one expires).
            limit = max_contacts
            if len(existing) > limit:
                by_expiry = sorted(existing.values(), key=lambda r: r["expires_at"])
                for row in by_expiry[: len(existing) - limit]:
                    uri = row["contact_uri"]
                    del existing[uri]
                    removed += 1
                    await conn.execute(
                        "DELETE FROM registrations WHERE tenant_id = $1 AND extension = $2"
                        " AND contact_uri = $3",
                        tenant_id,
                        extension,
                        uri,
                    )
                    events.append(self._unregistered(tenant_id, extension, user_id, uri))
            count = len(existing)
            for event in events:
                kind = event.WhichOneof("kind")
                if kind == "registered":
                    event.registered.contact_count = count
                elif kind == "unregistered":
                    event.unregistered.contact_count = count
            await self._write_events(conn, events)
            if events:
                await conn.execute(
                    "SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, presence_key(tenant_id, extension)
                )
            bindings = [_binding(row) for row in existing.values()]
        # Our own cache is refreshed right away (the NOTIFY reaches the other replicas).
        self._cache[(tenant_id, extension)] = bindings
        return ApplyResult(bindings, registered, removed)

    async def sweep_expired(self, *, batch: int = 1000) -> int:
        """Delete bindings past their expiry and announce each once; how many were removed."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                DELETE FROM registrations WHERE ctid IN (
                    SELECT ctid FROM registrations WHERE expires_at <= now()
                    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                RETURNING tenant_id, extension, contact_uri, user_id
                """,
                batch,
            )
            if not rows:
                return 0
            aors = {(row["tenant_id"], row["extension"]) for row in rows}
            remaining = {
                (r["tenant_id"], r["extension"]): r["n"]
                for r in await conn.fetch(
                    "SELECT tenant_id, extension, count(*) AS n FROM registrations"
                    " WHERE (tenant_id, extension) IN"
                    " (SELECT * FROM unnest($1::text[], $2::text[]))"
                    " AND expires_at > now() GROUP BY tenant_id, extension",
                    [a[0] for a in aors],
                    [a[1] for a in aors],
                )
            }
            events = []
            for row in rows:
                event = self._envelope(row["tenant_id"], row["extension"], row["user_id"])
                event.expired.contact_uri = row["contact_uri"]
                event.expired.contact_count = remaining.get((row["tenant_id"], row["extension"]), 0)
                events.append(event)
            await self._write_events(conn, events)
            for tenant_id, extension in aors:
                await conn.execute(
                    "SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, presence_key(tenant_id, extension)
                )
        for aor in aors:
            self._cache.pop(aor, None)
        return len(rows)

    # -- presence events -------------------------------------------------------------------

    def _envelope(self, tenant_id: str, extension: str, user_id: str) -> presence_pb2.PresenceEvent:
        occurred = Timestamp()
        occurred.FromDatetime(datetime.fromtimestamp(self._clock(), UTC))
        return presence_pb2.PresenceEvent(
            event_id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            extension=extension,
            user_id=user_id,
            occurred_at=occurred,
            producer=self.replica,
        )

    def _registered(
        self,
        tenant_id: str,
        extension: str,
        user_id: str,
        contact_uri: str,
        change: Any,
        source: RegistrationSource,
        refresh: bool,
    ) -> presence_pb2.PresenceEvent:
        event = self._envelope(tenant_id, extension, user_id)
        event.registered.CopyFrom(
            presence_pb2.Registered(
                contact_uri=contact_uri,
                instance_id=change.instance_id,
                user_agent=source.user_agent,
                source_address=f"{source.host}:{source.port}",
                transport=source.transport.lower(),
                expires=Duration(seconds=change.expires),
                refresh=refresh,
            )
        )
        return event

    def _unregistered(
        self, tenant_id: str, extension: str, user_id: str, contact_uri: str
    ) -> presence_pb2.PresenceEvent:
        event = self._envelope(tenant_id, extension, user_id)
        event.unregistered.contact_uri = contact_uri
        return event

    async def _write_events(
        self, conn: asyncpg.Connection, events: Sequence[presence_pb2.PresenceEvent]
    ) -> None:
        if not events:
            return
        await conn.executemany(
            "INSERT INTO presence_outbox (event_key, event_id, payload) VALUES ($1, $2, $3)",
            [
                (presence_key(e.tenant_id, e.extension), e.event_id, e.SerializeToString())
                for e in events
            ],
        )
        await conn.execute("SELECT pg_notify($1, '')", PRESENCE_NOTIFY_CHANNEL)
