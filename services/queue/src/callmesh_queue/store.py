"""PostgreSQL side of the queue service: definitions, leases, snapshots, journal, outbox.

All SQL lives here. Every write an owner makes for a shard goes through `append` or
`write_snapshot`, which lock the shard's lease row (`FOR SHARE`) and check that this replica
still holds it at the generation it took: a takeover (`UPDATE ... generation + 1`) needs that
row exclusively, so it waits for a write in flight and the new owner, which reads the journal
only after its takeover committed, sees every row the old owner managed to commit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

NOTIFY_CHANNEL = "callmesh_queue_outbox"


class LeaseLost(Exception):
    """This replica no longer holds the shard's lease at the generation it acted under."""


@dataclass(frozen=True, slots=True)
class QueueDefinition:
    tenant_id: str
    queue_id: str
    config: dict[str, Any]
    options: dict[str, Any]
    version: int


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    tenant_id: str
    owner: str
    owner_address: str
    generation: int
    live: bool


@dataclass(frozen=True, slots=True)
class ShardRecord:
    """What a new owner loads: the latest snapshot (if any) and the journal after it."""

    snapshot: dict[str, Any] | None
    snapshot_seq: int
    journal: list[tuple[int, dict[str, Any]]]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class QueueStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # ------------------------------------------------------------------ definitions

    async def put_queue(
        self,
        tenant_id: str,
        queue_id: str,
        config: Mapping[str, Any],
        options: Mapping[str, Any] | None = None,
    ) -> int:
        """Create or replace a queue definition (and its tenant's lease row); its version."""
        async with self.pool.acquire() as conn, conn.transaction():
            version: int = await conn.fetchval(
                """
                INSERT INTO queues (tenant_id, queue_id, config, options)
                VALUES ($1, $2, $3::jsonb, $4::jsonb)
                ON CONFLICT (tenant_id, queue_id) DO UPDATE
                   SET config = EXCLUDED.config, options = EXCLUDED.options,
                       version = queues.version + 1, updated_at = now()
                RETURNING version
                """,
                tenant_id,
                queue_id,
                _json(dict(config)),
                _json(dict(options or {})),
            )
            await conn.execute(
                "INSERT INTO leases (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", tenant_id
            )
        return version

    async def queue_definitions(self, tenant_id: str) -> list[QueueDefinition]:
        rows = await self.pool.fetch(
            "SELECT * FROM queues WHERE tenant_id = $1 ORDER BY queue_id", tenant_id
        )
        return [
            QueueDefinition(
                tenant_id=row["tenant_id"],
                queue_id=row["queue_id"],
                config=json.loads(row["config"]),
                options=json.loads(row["options"]),
                version=row["version"],
            )
            for row in rows
        ]

    async def definition_versions(self, tenant_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        rows = await self.pool.fetch(
            "SELECT tenant_id, queue_id, version FROM queues WHERE tenant_id = ANY($1::text[])",
            list(tenant_ids),
        )
        versions: dict[str, dict[str, int]] = {}
        for row in rows:
            versions.setdefault(row["tenant_id"], {})[row["queue_id"]] = row["version"]
        return versions

    # ------------------------------------------------------------------ leases

    async def lease_holder(self, tenant_id: str) -> LeaseHolder | None:
        row = await self.pool.fetchrow(
            "SELECT *, expires_at > now() AS live FROM leases WHERE tenant_id = $1", tenant_id
        )
        if row is None:
            return None
        return LeaseHolder(
            tenant_id=row["tenant_id"],
            owner=row["owner"],
            owner_address=row["owner_address"],
            generation=row["generation"],
            live=row["live"],
        )

    async def take_expired(
        self, owner: str, address: str, ttl: float, only: str | None = None
    ) -> list[tuple[str, int]]:
        """Take every expired lease (or just `only`'s): [(tenant_id, new generation)]."""
        rows = await self.pool.fetch(
            """
            UPDATE leases
               SET owner = $1, owner_address = $2, generation = generation + 1,
                   expires_at = now() + make_interval(secs => $3)
             WHERE expires_at < now() AND ($4::text IS NULL OR tenant_id = $4)
            RETURNING tenant_id, generation
            """,
            owner,
            address,
            ttl,
            only,
        )
        return [(row["tenant_id"], row["generation"]) for row in rows]

    async def renew(self, owner: str, held: Mapping[str, int], ttl: float) -> set[str]:
        """Extend the leases still held at their generation; the tenants renewed."""
        if not held:
            return set()
        rows = await self.pool.fetch(
            """
            UPDATE leases AS l
               SET expires_at = now() + make_interval(secs => $2)
              FROM unnest($3::text[], $4::bigint[]) AS h(tenant_id, generation)
             WHERE l.tenant_id = h.tenant_id AND l.generation = h.generation AND l.owner = $1
            RETURNING l.tenant_id
            """,
            owner,
            ttl,
            list(held),
            list(held.values()),
        )
        return {row["tenant_id"] for row in rows}

    async def release(self, owner: str, held: Mapping[str, int]) -> None:
        """Let the leases expire now (graceful drain) so another replica takes over at once."""
        if not held:
            return
        await self.pool.execute(
            """
            UPDATE leases AS l SET expires_at = '-infinity'
              FROM unnest($2::text[], $3::bigint[]) AS h(tenant_id, generation)
             WHERE l.tenant_id = h.tenant_id AND l.generation = h.generation AND l.owner = $1
            """,
            owner,
            list(held),
            list(held.values()),
        )

    # ------------------------------------------------------------------ shard state

    async def load_shard(self, tenant_id: str) -> ShardRecord:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            row = await conn.fetchrow(
                "SELECT journal_seq, state FROM snapshots WHERE tenant_id = $1", tenant_id
            )
            after = row["journal_seq"] if row is not None else 0
            rows = await conn.fetch(
                "SELECT seq, op FROM journal WHERE tenant_id = $1 AND seq > $2 ORDER BY seq",
                tenant_id,
                after,
            )
        return ShardRecord(
            snapshot=json.loads(row["state"]) if row is not None else None,
            snapshot_seq=after,
            journal=[(r["seq"], json.loads(r["op"])) for r in rows],
        )

    async def _check_lease(
        self, conn: asyncpg.Connection, tenant_id: str, owner: str, generation: int
    ) -> None:
        held = await conn.fetchval(
            """
            SELECT 1 FROM leases
             WHERE tenant_id = $1 AND owner = $2 AND generation = $3
               FOR SHARE
            """,
            tenant_id,
            owner,
            generation,
        )
        if held is None:
            raise LeaseLost(f"lease of {tenant_id!r} generation {generation} is gone")

    async def append(
        self,
        tenant_id: str,
        owner: str,
        generation: int,
        seq: int,
        op: Mapping[str, Any],
        events: Sequence[tuple[str, Any]],
    ) -> None:
        """Commit one journal entry and the CallEvents it caused, under the lease.

        `events` are (call_id, event) pairs where `event` is a `CallEvent` without `seq`;
        each gets the next seq of its call's "queue" leg inside this transaction.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await self._check_lease(conn, tenant_id, owner, generation)
            await conn.execute(
                "INSERT INTO journal (tenant_id, seq, generation, op) VALUES ($1, $2, $3, $4)",
                tenant_id,
                seq,
                generation,
                _json(dict(op)),
            )
            for call_id, event in events:
                event.seq = await conn.fetchval(
                    """
                    INSERT INTO call_event_seq (call_id, last_seq) VALUES ($1, 1)
                    ON CONFLICT (call_id) DO UPDATE
                       SET last_seq = call_event_seq.last_seq + 1, updated_at = now()
                    RETURNING last_seq
                    """,
                    call_id,
                )
                await conn.execute(
                    "INSERT INTO call_event_outbox (call_id, event_id, payload)"
                    " VALUES ($1, $2, $3)",
                    call_id,
                    event.event_id,
                    event.SerializeToString(),
                )
            if events:
                await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)

    async def write_snapshot(
        self,
        tenant_id: str,
        owner: str,
        generation: int,
        journal_seq: int,
        state: Mapping[str, Any],
    ) -> None:
        """Store the state after journal entry `journal_seq` and drop the entries it covers."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._check_lease(conn, tenant_id, owner, generation)
            await conn.execute(
                """
                INSERT INTO snapshots (tenant_id, journal_seq, generation, state)
                VALUES ($1, $2, $3, $4::jsonb)
                ON CONFLICT (tenant_id) DO UPDATE
                   SET journal_seq = EXCLUDED.journal_seq, generation = EXCLUDED.generation,
                       state = EXCLUDED.state, taken_at = now()
                """,
                tenant_id,
                journal_seq,
                generation,
                _json(dict(state)),
            )
            await conn.execute(
                "DELETE FROM journal WHERE tenant_id = $1 AND seq <= $2", tenant_id, journal_seq
            )
