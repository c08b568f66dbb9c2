"""The owner side of the queue service: leases, live shards, the journal write path, timers
and the callers' streams.

Rules this module keeps:

* **One owner per tenant shard.** A lease row per tenant (`store.py`), renewed every
  `lease_seconds / 3` and taken over with an atomic `UPDATE ... WHERE expires_at < now()`
  once it lapsed. A replica acts for a tenant only while it holds the lease; when a renewal
  finds the lease gone, or a fenced write fails, it drops the shard at once (streams are
  closed with UNAVAILABLE so the edge re-joins by `waiting_id`).
* **Journal before telling.** Every operation is applied to the in-memory shard, then
  journaled (with the CallEvents it caused) in one fenced transaction, and only after that
  commit are its instructions put on the callers' streams. If the write fails, nothing was
  told and the in-memory shard, now ahead of the database, is thrown away and rebuilt from
  PostgreSQL.
* **Requests for a tenant this replica does not own** either take an expired lease on the
  spot or are refused with UNAVAILABLE and the owner's address in the trailing metadata
  `callmesh-queue-owner` (a redirect the edge follows; see README).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import grpc
from callmesh.queue.v1 import queue_pb2
from callmesh_core.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from callmesh_core.logging import EventLogger

from callmesh_queue.core import (
    AgentStatus,
    DuplicateCall,
    InvalidTransition,
    QueueCoreError,
    UnknownAgent,
    UnknownQueue,
)
from callmesh_queue.core.snapshot import config_from_data, config_to_data
from callmesh_queue.shard import (
    Outcome,
    Phase,
    QueueOptions,
    Shard,
    WaitRecord,
    duration,
    rejection_overflow,
    timestamp,
)
from callmesh_queue.store import LeaseLost, QueueDefinition, QueueStore

OWNER_METADATA = "callmesh-queue-owner"


STOP_WAIT_SECONDS = 5.0


class NotOwner(Unavailable):
    """Another live replica owns this tenant's queues; `address` is where to go."""

    def __init__(self, tenant_id: str, address: str) -> None:
        super().__init__(f"queues of tenant {tenant_id!r} are served by {address}")
        self.address = address


def domain_error(error: QueueCoreError) -> DomainError:
    if isinstance(error, UnknownQueue):
        return NotFound(f"unknown queue {error.args[0]!r}")
    if isinstance(error, UnknownAgent):
        return NotFound(f"unknown agent {error.args[0]!r}")
    if isinstance(error, DuplicateCall):
        return AlreadyExists(str(error))
    if isinstance(error, InvalidTransition):
        return FailedPrecondition(str(error))
    return FailedPrecondition(str(error))


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """Ends a caller's stream with an error status (ownership moved, superseded)."""

    code: grpc.StatusCode
    message: str


StreamItem = queue_pb2.QueueInstruction | StreamClosed | None


class WaitStream:
    """The queue side of one caller's `Wait` stream: what to send, in order."""

    def __init__(self, tenant_id: str, waiting_id: str) -> None:
        self.tenant_id = tenant_id
        self.waiting_id = waiting_id
        self._items: asyncio.Queue[StreamItem] = asyncio.Queue()
        self.ended = False

    def send(self, instruction: queue_pb2.QueueInstruction) -> None:
        if not self.ended:
            self._items.put_nowait(instruction)

    def finish(self) -> None:
        """End the stream normally after what was sent."""
        if not self.ended:
            self.ended = True
            self._items.put_nowait(None)

    def close(self, code: grpc.StatusCode, message: str) -> None:
        if not self.ended:
            self.ended = True
            self._items.put_nowait(StreamClosed(code, message))

    async def next(self) -> StreamItem:
        return await self._items.get()


@dataclass(eq=False)
class LiveShard:
    shard: Shard
    generation: int
    journal_seq: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    streams: dict[str, WaitStream] = field(default_factory=dict)
    # Live waits without a stream, and when they count as hung up (wall-clock seconds).
    orphaned_until: dict[str, float] = field(default_factory=dict)
    definition_versions: dict[str, int] = field(default_factory=dict)
    since_snapshot: int = 0
    dropped: bool = False
    timer_task: asyncio.Task[None] | None = None

    @property
    def tenant_id(self) -> str:
        return self.shard.tenant_id


_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class QueueRuntime:
    def __init__(
        self,
        store: QueueStore,
        *,
        replica_id: str,
        address: str,
        log: EventLogger,
        lease_seconds: float = 3.0,
        rejoin_grace_seconds: float = 30.0,
        snapshot_every: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.replica_id = replica_id
        self.address = address
        self.log = log
        self.lease_seconds = lease_seconds
        self.rejoin_grace_seconds = rejoin_grace_seconds
        self.snapshot_every = snapshot_every
        # Wall clock on purpose: the engine's deadlines are stored and read by other
        # replicas, so all of them must measure time on the same scale.
        self.clock = clock
        self._held: dict[str, int] = {}
        self._shards: dict[str, LiveShard] = {}
        self._loading: dict[str, asyncio.Task[LiveShard]] = {}
        self._lease_task: asyncio.Task[None] | None = None
        self._last_renewed = time.monotonic()
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.lease_tick()
        self._lease_task = asyncio.create_task(self._lease_loop(), name="queue-leases")

    async def stop(self, *, release: bool = True) -> None:
        """Stop acting for every shard; with `release` let the leases go at once so another
        replica takes over without waiting for them to expire."""
        self._stopping = True
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        for task in list(self._loading.values()):
            task.cancel()
        held = dict(self._held)
        for tenant_id in list(self._shards):
            live = self._shards[tenant_id]
            # Let an operation in flight finish its write, but never hang the shutdown on it:
            # its write is fenced by the lease generation either way.
            try:
                await asyncio.wait_for(live.lock.acquire(), STOP_WAIT_SECONDS)
            except TimeoutError:
                self.log.warning("stop_without_lock", tenant_id=tenant_id)
                self._drop(tenant_id, "replica stopping", keep_lease=True)
                continue
            try:
                self._drop(tenant_id, "replica stopping", keep_lease=True)
            finally:
                live.lock.release()
        self._held.clear()
        if release:
            with contextlib.suppress(*_DB_ERRORS, TimeoutError):
                await asyncio.wait_for(self.store.release(self.replica_id, held), STOP_WAIT_SECONDS)

    def owned_tenants(self) -> list[str]:
        return list(self._shards)

    async def _lease_loop(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.lease_tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("lease_tick_failed", error=f"{type(exc).__name__}: {exc}")
                if time.monotonic() - self._last_renewed > self.lease_seconds:
                    # Could not renew for a whole lease period: someone else may own these
                    # shards by now. Stop acting before we are told so.
                    for tenant_id in list(self._shards):
                        self._drop(tenant_id, "lease not renewed in time")
                    self._held.clear()

    async def lease_tick(self) -> None:
        """Renew, take over what expired, load what is held, apply definition changes,
        hang up on callers whose stream stayed away too long."""
        if self._stopping:
            return
        renewed = await self.store.renew(self.replica_id, self._held, self.lease_seconds)
        self._last_renewed = time.monotonic()
        for tenant_id in [t for t in self._held if t not in renewed]:
            self.log.warning("lease_lost", tenant=tenant_id)
            self._held.pop(tenant_id, None)
            self._drop(tenant_id, "lease lost")
        taken = await self.store.take_expired(self.replica_id, self.address, self.lease_seconds)
        for tenant_id, generation in taken:
            self.log.info("lease_taken", tenant=tenant_id, generation=generation)
            self._held[tenant_id] = generation
        for tenant_id in list(self._held):
            if tenant_id not in self._shards:
                try:
                    await self._ensure_loaded(tenant_id)
                except Exception as exc:  # retried on the next tick
                    self.log.warning(
                        "shard_load_failed", tenant=tenant_id, error=f"{type(exc).__name__}: {exc}"
                    )
        await self._refresh_definitions()
        await self._hang_up_orphans()
        await self._start_new_days()

    # ------------------------------------------------------------------ loading

    async def _ensure_loaded(self, tenant_id: str) -> LiveShard:
        live = self._shards.get(tenant_id)
        if live is not None:
            return live
        task = self._loading.get(tenant_id)
        if task is None:
            task = asyncio.create_task(self._load(tenant_id), name=f"load-{tenant_id}")
            self._loading[tenant_id] = task
            task.add_done_callback(lambda _: self._loading.pop(tenant_id, None))
        return await asyncio.shield(task)

    async def _load(self, tenant_id: str) -> LiveShard:
        generation = self._held[tenant_id]
        began = time.monotonic()
        record = await self.store.load_shard(tenant_id)
        shard = (
            Shard.restore(tenant_id, record.snapshot)
            if record.snapshot is not None
            else Shard(tenant_id)
        )
        journal_seq = record.snapshot_seq
        for seq, op in record.journal:
            shard.apply(op)  # already told and published by the previous owner
            journal_seq = seq
        live = LiveShard(shard=shard, generation=generation, journal_seq=journal_seq)
        if self._held.get(tenant_id) != generation:
            raise Unavailable(f"lease of {tenant_id!r} lost while loading")
        now = self.clock()
        for wait in shard.live_waits():
            live.orphaned_until[wait.waiting_id] = now + self.rejoin_grace_seconds
        self._shards[tenant_id] = live
        live.timer_task = asyncio.create_task(self._timer_loop(live), name=f"timers-{tenant_id}")
        definitions = await self.store.queue_definitions(tenant_id)
        await self._apply_definitions(live, definitions)
        # A fresh snapshot right away: the next owner replays only what happens from here.
        await self._snapshot(live)
        self.log.info(
            "shard_loaded",
            tenant=tenant_id,
            generation=generation,
            journal_replayed=len(record.journal),
            waiting=len(shard.waits),
            load_ms=round((time.monotonic() - began) * 1000),
        )
        return live

    async def _apply_definitions(
        self, live: LiveShard, definitions: Iterable[QueueDefinition]
    ) -> None:
        engine = live.shard.engine
        for definition in definitions:
            live.shard.options[definition.queue_id] = QueueOptions.from_data(definition.options)
            wanted = config_to_data(config_from_data(definition.config))
            if (
                definition.queue_id in engine.queue_ids()
                and config_to_data(engine.queue_config(definition.queue_id)) == wanted
            ):
                live.definition_versions[definition.queue_id] = definition.version
                continue
            await self._submit(live, {"op": "configure", "config": wanted})
            live.definition_versions[definition.queue_id] = definition.version

    async def _refresh_definitions(self) -> None:
        if not self._shards:
            return
        versions = await self.store.definition_versions(list(self._shards))
        for tenant_id, queues in versions.items():
            live = self._shards.get(tenant_id)
            if live is None or live.definition_versions == queues:
                continue
            with contextlib.suppress(DomainError):
                await self._apply_definitions(live, await self.store.queue_definitions(tenant_id))

    async def shard_for(self, tenant_id: str) -> LiveShard:
        """The live shard of a tenant this replica owns, taking an expired lease if need be."""
        if self._stopping:
            raise Unavailable("this queue replica is stopping")
        live = self._shards.get(tenant_id)
        if live is not None:
            return live
        if tenant_id not in self._held:
            holder = await self.store.lease_holder(tenant_id)
            if holder is None:
                raise NotFound(f"tenant {tenant_id!r} has no queues")
            if holder.live:
                if holder.owner == self.replica_id:
                    # A previous run of this replica id: its lease must lapse first.
                    raise Unavailable(f"queues of tenant {tenant_id!r} are being taken over")
                raise NotOwner(tenant_id, holder.owner_address)
            taken = await self.store.take_expired(
                self.replica_id, self.address, self.lease_seconds, only=tenant_id
            )
            if not taken:
                raise Unavailable(f"queues of tenant {tenant_id!r} are being taken over")
            self.log.info("lease_taken", tenant=tenant_id, generation=taken[0][1], on="request")
            self._held[tenant_id] = taken[0][1]
        try:
            return await self._ensure_loaded(tenant_id)
        except DomainError:
            raise
        except _DB_ERRORS as exc:
            raise Unavailable(f"queue state of tenant {tenant_id!r} cannot be loaded") from exc

    # ------------------------------------------------------------------ the write path

    async def _submit(self, live: LiveShard, op: dict[str, Any]) -> Outcome:
        # Shielded: a caller that goes away mid-write must not leave us unsure whether the
        # journal row committed (the in-memory shard is already ahead of the database).
        return await asyncio.shield(self._apply_and_write(live, op))

    async def _apply_and_write(self, live: LiveShard, op: dict[str, Any]) -> Outcome:
        async with live.lock:
            if live.dropped:
                raise Unavailable(f"queues of tenant {live.tenant_id!r} moved; try again")
            op.setdefault("now", self.clock())
            outcome = live.shard.apply(op)
            for event in outcome.events:
                event.event_id = str(uuid.uuid4())
                event.producer = self.replica_id
            seq = live.journal_seq + 1
            try:
                await self.store.append(
                    live.tenant_id,
                    self.replica_id,
                    live.generation,
                    seq,
                    op,
                    [(event.call_id, event) for event in outcome.events],
                )
            except LeaseLost as exc:
                self._held.pop(live.tenant_id, None)
                self._drop(live.tenant_id, "lease lost on write")
                raise Unavailable(f"queues of tenant {live.tenant_id!r} moved; try again") from exc
            except _DB_ERRORS as exc:
                self.log.warning("journal_write_failed", tenant=live.tenant_id, error=repr(exc))
                self._drop(live.tenant_id, "journal write failed", keep_lease=True)
                raise Unavailable("queue state could not be stored; try again") from exc
            live.journal_seq = seq
            live.since_snapshot += 1
            self._deliver(live, outcome)
            for action in outcome.unrouted:
                self.log.info("action_unrouted", tenant=live.tenant_id, action=repr(action))
            if live.since_snapshot >= self.snapshot_every:
                await self._snapshot_locked(live)
        live.wake.set()
        live.changed.set()
        return outcome

    async def _snapshot(self, live: LiveShard) -> None:
        async with live.lock:
            await self._snapshot_locked(live)

    async def _snapshot_locked(self, live: LiveShard) -> None:
        try:
            await self.store.write_snapshot(
                live.tenant_id,
                self.replica_id,
                live.generation,
                live.journal_seq,
                live.shard.to_data(),
            )
            live.since_snapshot = 0
        except LeaseLost:
            self._held.pop(live.tenant_id, None)
            self._drop(live.tenant_id, "lease lost on snapshot")
        except _DB_ERRORS as exc:
            # The journal still holds everything; a later snapshot will catch up.
            self.log.warning("snapshot_failed", tenant=live.tenant_id, error=repr(exc))

    def _deliver(self, live: LiveShard, outcome: Outcome) -> None:
        for waiting_id, instruction in outcome.instructions:
            stream = live.streams.get(waiting_id)
            if stream is not None:
                stream.send(instruction)
        for waiting_id in outcome.finished:
            live.orphaned_until.pop(waiting_id, None)
            stream = live.streams.pop(waiting_id, None)
            if stream is not None:
                stream.finish()

    def _drop(self, tenant_id: str, reason: str, *, keep_lease: bool = False) -> None:
        """Stop acting for a tenant: forget its state, close its callers' streams."""
        live = self._shards.pop(tenant_id, None)
        if not keep_lease:
            self._held.pop(tenant_id, None)
        if live is None:
            return
        live.dropped = True
        live.changed.set()
        if live.timer_task is not None:
            live.timer_task.cancel()
        for stream in live.streams.values():
            stream.close(grpc.StatusCode.UNAVAILABLE, f"queue ownership moved ({reason}); rejoin")
        live.streams.clear()
        self.log.warning("shard_dropped", tenant=tenant_id, reason=reason)

    # ------------------------------------------------------------------ timers and orphans

    async def _timer_loop(self, live: LiveShard) -> None:
        engine = live.shard.engine
        while not live.dropped:
            live.wake.clear()
            due = engine.next_timer()
            delay = None if due is None else max(0.0, due - self.clock())
            try:
                await asyncio.wait_for(live.wake.wait(), delay)
                continue
            except TimeoutError:
                pass
            try:
                await self._submit(live, {"op": "timer"})
            except DomainError as exc:
                self.log.warning("timer_failed", tenant=live.tenant_id, error=exc.message)
                return

    async def _start_new_days(self) -> None:
        """Reset a queue's "today" figures when its local midnight has passed."""
        now = self.clock()
        for live in list(self._shards.values()):
            for queue_id in live.shard.engine.queue_ids():
                zone = live.shard.queue_options(queue_id).time_zone
                try:
                    day = datetime.fromtimestamp(now, ZoneInfo(zone)).date().isoformat()
                except (ZoneInfoNotFoundError, ValueError):
                    day = datetime.fromtimestamp(now, UTC).date().isoformat()
                if live.shard.counter_days.get(queue_id) != day:
                    with contextlib.suppress(DomainError):
                        await self._submit(
                            live, {"op": "new_day", "queue_id": queue_id, "day": day}
                        )

    async def _hang_up_orphans(self) -> None:
        now = self.clock()
        for live in list(self._shards.values()):
            expired = [
                waiting_id
                for waiting_id, until in live.orphaned_until.items()
                if until <= now and waiting_id not in live.streams
            ]
            for waiting_id in expired:
                live.orphaned_until.pop(waiting_id, None)
                record = live.shard.waits.get(waiting_id)
                if record is None or record.phase is Phase.CALLBACK:
                    continue
                self.log.info("wait_orphaned", tenant=live.tenant_id, waiting_id=waiting_id)
                with contextlib.suppress(DomainError):
                    await self._submit(live, {"op": "orphaned", "waiting_id": waiting_id})

    # ------------------------------------------------------------------ callers

    async def join(self, join: queue_pb2.Join) -> WaitStream:
        """Attach a caller's stream: a new wait, or a re-join by `waiting_id`."""
        if not join.tenant_id:
            raise InvalidArgument("join.tenant_id is required")
        live = await self.shard_for(join.tenant_id)
        if join.waiting_id:
            return await self._rejoin(live, join.waiting_id)
        if not join.queue_id or not join.call_id:
            raise InvalidArgument("join.queue_id and join.call_id are required")
        if join.queue_id not in live.shard.engine.queue_ids():
            raise NotFound(f"unknown queue {join.queue_id!r}")
        waiting_id = str(uuid.uuid4())
        stream = WaitStream(live.tenant_id, waiting_id)
        live.streams[waiting_id] = stream
        op = {
            "op": "join",
            "waiting_id": waiting_id,
            "queue_id": join.queue_id,
            "call_id": join.call_id,
            "caller_number": join.caller_number,
            "caller_name": join.caller_name,
            "priority": join.priority,
            "skills": list(join.required_skills),
            "language": join.language,
            "edge_replica": join.edge_replica,
        }
        try:
            outcome = await self._submit(live, op)
        except BaseException:
            live.streams.pop(waiting_id, None)
            raise
        if outcome.error is not None:
            live.streams.pop(waiting_id, None)
            raise domain_error(outcome.error)
        result = outcome.join
        if result is not None and not result.accepted:
            live.streams.pop(waiting_id, None)
            stream.send(rejection_overflow(result))
            stream.finish()
        return stream

    async def _rejoin(self, live: LiveShard, waiting_id: str) -> WaitStream:
        async with live.lock:
            record = live.shard.waits.get(waiting_id)
            if record is None or record.phase is Phase.CALLBACK:
                raise NotFound(f"waiting_id {waiting_id!r} is not waiting")
            previous = live.streams.get(waiting_id)
            if previous is not None:
                previous.close(grpc.StatusCode.ABORTED, "superseded by a re-join")
            stream = WaitStream(live.tenant_id, waiting_id)
            live.streams[waiting_id] = stream
            live.orphaned_until.pop(waiting_id, None)
            stream.send(live.shard.joined_instruction(record, self.clock()))
            if record.phase is Phase.WAITING:
                stream.send(live.shard.music_instruction(record))
                # Offers made while the caller had no stream cannot be rung by this edge:
                # tell it which ones are open so it can ring (or the ring timeout moves on).
                for offer_id, agent_id in record.offers.items():
                    stream.send(self._offer_again(live, record, offer_id, agent_id))
        return stream

    def _offer_again(
        self, live: LiveShard, record: WaitRecord, offer_id: str, agent_id: str
    ) -> queue_pb2.QueueInstruction:
        options = live.shard.queue_options(record.queue_id)
        config = live.shard.engine.queue_config(record.queue_id)
        offer = queue_pb2.Offer(
            offer_id=offer_id,
            agent_user_id=agent_id,
            agent_extension=options.agent_extensions.get(agent_id, ""),
            ring_timeout=duration(config.ring_timeout),
            caller_name_prefix=options.caller_name_prefix,
        )
        return queue_pb2.QueueInstruction(offer=offer)

    def detach(self, stream: WaitStream) -> None:
        """The caller's stream went away without a hang-up: keep the place for a while."""
        live = self._shards.get(stream.tenant_id)
        if live is None or live.streams.get(stream.waiting_id) is not stream:
            return
        del live.streams[stream.waiting_id]
        record = live.shard.waits.get(stream.waiting_id)
        if record is not None and record.phase is not Phase.CALLBACK:
            live.orphaned_until[stream.waiting_id] = self.clock() + self.rejoin_grace_seconds

    async def caller_message(self, stream: WaitStream, message: queue_pb2.CallerMessage) -> None:
        live = await self.shard_for(stream.tenant_id)
        if live.streams.get(stream.waiting_id) is not stream:
            return  # superseded or finished: a late message from an old stream
        waiting_id = stream.waiting_id
        record = live.shard.waits.get(waiting_id)
        kind = message.WhichOneof("kind")
        if record is None:
            return
        if kind == "hangup":
            if record.phase is not Phase.CALLBACK:
                await self._submit(live, {"op": "hangup", "waiting_id": waiting_id})
            live.streams.pop(waiting_id, None)
            live.orphaned_until.pop(waiting_id, None)
            stream.finish()
        elif kind == "leave":
            await self._submit(live, {"op": "leave", "waiting_id": waiting_id})
        elif kind == "dtmf":
            await self._key(live, record, message.dtmf.digit)
        elif kind == "offer_update":
            update = message.offer_update
            status = update.status
            if status == queue_pb2.OFFER_STATUS_ANSWERED:
                name = "offer_answered"
            elif status in (
                queue_pb2.OFFER_STATUS_NO_ANSWER,
                queue_pb2.OFFER_STATUS_BUSY,
                queue_pb2.OFFER_STATUS_REJECTED,
                queue_pb2.OFFER_STATUS_FAILED,
            ):
                name = "offer_failed"
            else:
                return  # RINGING, CANCELLED: nothing changes
            await self._submit(
                live, {"op": name, "waiting_id": waiting_id, "offer_id": update.offer_id}
            )
        elif kind == "connection_ended":
            ended_by = {
                queue_pb2.ENDED_BY_CALLER: "caller",
                queue_pb2.ENDED_BY_AGENT: "agent",
            }.get(message.connection_ended.ended_by, "system")
            await self._submit(
                live, {"op": "connection_ended", "waiting_id": waiting_id, "ended_by": ended_by}
            )
        elif kind == "survey_answer":
            await self._submit(
                live,
                {
                    "op": "survey_answer",
                    "waiting_id": waiting_id,
                    "rating": message.survey_answer.rating,
                },
            )
        elif kind == "join":
            raise InvalidArgument("join is only valid as the first message of a stream")

    async def _key(self, live: LiveShard, record: WaitRecord, digit: str) -> None:
        if record.phase is not Phase.WAITING or not digit:
            return
        options = live.shard.queue_options(record.queue_id)
        if digit == options.callback_digit:
            outcome = await self._submit(
                live,
                {
                    "op": "request_callback",
                    "waiting_id": record.waiting_id,
                    "number": record.caller_number,
                },
            )
            if outcome.error is not None:
                raise domain_error(outcome.error)
        elif digit == options.voicemail_digit:
            await self._submit(
                live, {"op": "leave", "waiting_id": record.waiting_id, "caller_choice": True}
            )

    # ------------------------------------------------------------------ agents

    async def agent_operation(
        self, tenant_id: str, agent_id: str, name: str, **extra: Any
    ) -> queue_pb2.AgentState:
        if not tenant_id or not agent_id:
            raise InvalidArgument("tenant_id and agent_user_id are required")
        live = await self.shard_for(tenant_id)
        known = True
        try:
            live.shard.engine.agent_status(agent_id)
        except UnknownAgent:
            known = False
        if known or name == "agent_login":
            outcome = await self._submit(live, {"op": name, "agent_id": agent_id, **extra})
            if outcome.error is not None:
                raise domain_error(outcome.error)
        elif name == "agent_pause":
            raise FailedPrecondition(f"agent {agent_id!r} is logged out and cannot pause")
        # Logging out or unpausing an agent the queues never saw changes nothing.
        return self.agent_state(live, agent_id)

    async def get_agent_state(self, tenant_id: str, agent_id: str) -> queue_pb2.AgentState:
        return self.agent_state(await self.shard_for(tenant_id), agent_id)

    def agent_queues(self, live: LiveShard, agent_id: str) -> list[str]:
        engine = live.shard.engine
        return [q for q in engine.queue_ids() if engine.queue_config(q).member(agent_id)]

    def agent_state(self, live: LiveShard, agent_id: str) -> queue_pb2.AgentState:
        engine = live.shard.engine
        try:
            status = engine.agent_status(agent_id)
            reason = engine.agent_pause_reason(agent_id) or ""
        except UnknownAgent:
            status, reason = AgentStatus.LOGGED_OUT, ""
        state = queue_pb2.AgentState(
            tenant_id=live.tenant_id,
            agent_user_id=agent_id,
            status=queue_pb2.AgentStatus.Value(f"AGENT_STATUS_{status.name}"),
            pause_reason=reason,
            queue_ids=self.agent_queues(live, agent_id)
            if status is not AgentStatus.LOGGED_OUT
            else [],
        )
        record = live.shard.agents.get(agent_id)
        if record is not None:
            state.since.CopyFrom(timestamp(record.since))
            if record.last_call_ended_at is not None:
                state.last_call_ended_at.CopyFrom(timestamp(record.last_call_ended_at))
        return state

    # ------------------------------------------------------------------ figures

    async def queue_stats(
        self, tenant_id: str, queue_ids: Iterable[str]
    ) -> list[queue_pb2.QueueStats]:
        live = await self.shard_for(tenant_id)
        engine = live.shard.engine
        wanted = list(queue_ids) or engine.queue_ids()
        unknown = [q for q in wanted if q not in engine.queue_ids()]
        if unknown:
            raise NotFound(f"unknown queue(s) {', '.join(unknown)}")
        now = self.clock()
        return [self._stats(live, queue_id, now) for queue_id in wanted]

    def _stats(self, live: LiveShard, queue_id: str, now: float) -> queue_pb2.QueueStats:
        engine = live.shard.engine
        figures = engine.figures(queue_id, now)
        config = engine.queue_config(queue_id)
        statuses = [engine.agent_status(m.agent_id) for m in config.members]
        stats = queue_pb2.QueueStats(
            tenant_id=live.tenant_id,
            queue_id=queue_id,
            at=timestamp(now),
            waiting=figures.waiting,
            longest_wait=duration(figures.longest_wait),
            agents_logged_in=sum(s is not AgentStatus.LOGGED_OUT for s in statuses),
            agents_available=figures.available_agents,
            agents_on_call=sum(
                s in (AgentStatus.ON_CALL, AgentStatus.RINGING, AgentStatus.WRAP_UP)
                for s in statuses
            ),
            agents_paused=sum(s is AgentStatus.PAUSED for s in statuses),
            answered_today=figures.answered,
            abandoned_today=figures.abandoned,
            service_level=figures.service_level or 0.0,
            service_level_threshold=duration(config.service_level_threshold),
            callbacks_pending=figures.callbacks_waiting,
        )
        if figures.estimated_wait_new_caller is not None:
            stats.estimated_wait.CopyFrom(duration(figures.estimated_wait_new_caller))
        if figures.average_handle_time is not None:
            stats.average_handle_time.CopyFrom(duration(figures.average_handle_time))
        return stats
