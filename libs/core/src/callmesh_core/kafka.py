"""Kafka plumbing: an idempotent protobuf producer and an at-least-once consumer loop.

Delivery contract (ARCHITECTURE §3):

- The producer is idempotent with `acks=all`: a broker-side retry never duplicates a record.
  Every record carries W3C trace headers, the protobuf type name and an event id.
- The consumer never auto-commits. For each partition it hands records to the handler in order
  and commits an offset only after the handler returned for every record before it, so a
  commit means "the effect is durable". A crash between effect and commit redelivers the
  record; handlers make their effect idempotent by event id (see `callmesh_core.db.claim_event`).
- A record that cannot be decoded, or whose handler raised `PoisonMessage`, or whose handler kept
  failing for `max_attempts` attempts, is copied to `<topic>.dlq` with headers saying why and
  where it came from, and then committed: a poison message never blocks its partition and never
  vanishes.
- A handler error that says infrastructure is down (network, database, a service answering
  UNAVAILABLE: see `is_transient`) is not the record's fault: the record waits, with backoff,
  until the dependency is back, rather than being dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from google.protobuf.message import DecodeError, Message
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer
from prometheus_client import CollectorRegistry, Counter, Gauge

from callmesh_core.errors import Unavailable
from callmesh_core.logging import EventLogger
from callmesh_core.telemetry import extract_kafka_headers, inject_kafka_headers

EVENT_ID_HEADER = "callmesh-event-id"
MESSAGE_TYPE_HEADER = "callmesh-message-type"
DLQ_SUFFIX = ".dlq"
DLQ_REASON_HEADER = "callmesh-dlq-reason"
DLQ_ERROR_HEADER = "callmesh-dlq-error"
DLQ_TOPIC_HEADER = "callmesh-dlq-original-topic"
DLQ_PARTITION_HEADER = "callmesh-dlq-original-partition"
DLQ_OFFSET_HEADER = "callmesh-dlq-original-offset"
DLQ_GROUP_HEADER = "callmesh-dlq-consumer-group"
DLQ_ATTEMPTS_HEADER = "callmesh-dlq-attempts"

MessageT = TypeVar("MessageT", bound=Message)


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _event_id(record: ConsumerRecord[bytes, bytes], headers: Sequence[tuple[str, bytes]]) -> str:
    given = _header(headers, EVENT_ID_HEADER)
    # Without an id header the record's position is its identity: stable across redelivery.
    if given:
        return given.decode(errors="replace")
    return f"{record.topic}:{record.partition}:{record.offset}"


def _key_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class EventProducer:
    """Idempotent (`enable_idempotence=True`, `acks="all"`) producer of protobuf messages."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        tracer: Tracer,
        client_id: str = "callmesh",
        linger_ms: int = 5,
    ) -> None:
        self.tracer = tracer
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        """Flush what is buffered, then close."""
        await self._producer.stop()

    async def send(
        self,
        topic: str,
        message: Message,
        *,
        key: str | bytes | None,
        event_id: str | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
    ) -> str:
        """Send `message` and wait until the broker has it (all in-sync replicas).

        `key` decides the partition, hence the order (e.g. the call id). `event_id` names the
        fact for idempotent consumers; pass a stable one when the same fact may be re-sent by
        application code, otherwise a fresh UUID is used. Returns the event id.
        """
        event_id = event_id or str(uuid.uuid4())
        with self.tracer.start_as_current_span(
            f"{topic} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": topic,
                "messaging.message.id": event_id,
            },
        ):
            record_headers = inject_kafka_headers(
                [
                    *headers,
                    (EVENT_ID_HEADER, event_id.encode()),
                    (MESSAGE_TYPE_HEADER, message.DESCRIPTOR.full_name.encode()),
                ]
            )
            await self._producer.send_and_wait(
                topic,
                message.SerializeToString(),
                key=_key_bytes(key),
                headers=record_headers,
            )
        return event_id

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        """Send bytes as they are (used to copy records to a DLQ untouched)."""
        await self._producer.send_and_wait(topic, value, key=key, headers=list(headers))


@dataclass(frozen=True)
class ConsumedEvent(Generic[MessageT]):
    """One decoded record, as a handler sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    message: MessageT
    headers: tuple[tuple[str, bytes], ...]
    event_id: str
    consumer_group: str
    timestamp_ms: int


Handler = Callable[[ConsumedEvent[MessageT]], Awaitable[None]]
BatchHandler = Callable[[Sequence[ConsumedEvent[MessageT]]], Awaitable[None]]
"""Applies a fetched batch of one partition all-or-nothing (e.g. in one transaction)."""


class ConsumerMetrics:
    """Prometheus metrics of a service's consumer loops; create once per registry."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.records = Counter(
            f"{prefix}_kafka_records",
            "records the consumer loop is done with, by outcome (handled, dead_lettered)",
            ["topic", "group", "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            f"{prefix}_kafka_handler_retries",
            "handler attempts that failed and were retried",
            ["topic", "group"],
            registry=registry,
        )
        self.lag = Gauge(
            f"{prefix}_kafka_consumer_lag",
            "records between the last committed offset and the partition end",
            ["topic", "partition", "group"],
            registry=registry,
        )


MAX_DEPENDENCY_WAIT_SECONDS = 10.0


def is_transient(exc: BaseException) -> bool:
    """True when `exc` says infrastructure is unavailable for now (network, database, a
    service answering UNAVAILABLE), as opposed to a message that cannot be handled."""
    if isinstance(exc, OSError | TimeoutError | Unavailable):
        return True
    # asyncpg is imported lazily by the services that use it; look it up only if present.
    asyncpg = sys.modules.get("asyncpg")
    return asyncpg is not None and isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError,
    )


class PoisonMessage(Exception):
    """Raised by a handler when a record can never be applied (retrying will not help)."""


class EventConsumer(Generic[MessageT]):
    """At-least-once consumer loop: decode, handle (with retries), commit; poison to the DLQ."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        topics: Sequence[str],
        message_type: type[MessageT],
        handler: Handler[MessageT],
        dlq_producer: EventProducer,
        tracer: Tracer,
        log: EventLogger,
        batch_handler: BatchHandler[MessageT] | None = None,
        max_attempts: int = 3,
        retry_backoff_seconds: float = 0.1,
        max_records_per_batch: int = 100,
        dlq_send_timeout_seconds: float = 10.0,
        metrics: ConsumerMetrics | None = None,
        client_id: str = "callmesh",
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.group_id = group_id
        self.topics = list(topics)
        self.message_type = message_type
        self.handler = handler
        self.batch_handler = batch_handler
        self.dlq_producer = dlq_producer
        self.tracer = tracer
        self.log = log
        self.max_attempts = max_attempts
        self.retry_backoff_seconds = retry_backoff_seconds
        self.max_records_per_batch = max_records_per_batch
        self.dlq_send_timeout_seconds = dlq_send_timeout_seconds
        self.metrics = metrics
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            # A new group starts from the beginning: facts published before the first deploy
            # of a consumer still matter to it.
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Join the group and start consuming in a background task."""
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"kafka-consumer-{self.group_id}")

    async def stop(self) -> None:
        """Finish the record in hand, commit what is done, leave the group."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self._consumer.stop()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                batches = await self._consumer.getmany(
                    timeout_ms=500, max_records=self.max_records_per_batch
                )
                for partition, records in batches.items():
                    if self._stopping.is_set():
                        break  # unprocessed records stay uncommitted and come back later
                    await self._process_partition(partition, records)
            except KafkaError as exc:
                # Broker hiccups (leader moves, coordinator changes, a DLQ send that failed) are
                # retried by looping; the failed record was rewound and comes again.
                self.log.warning("kafka_consume_error", group=self.group_id, error=repr(exc))
                await asyncio.sleep(1.0)
            except Exception:
                self.log.exception("kafka_consume_failed", group=self.group_id)
                await asyncio.sleep(1.0)

    async def _process_partition(
        self, partition: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> None:
        if self.batch_handler is not None and len(records) > 1:
            try:
                handled = await self._process_batch(records)
            except BaseException:
                with contextlib.suppress(IllegalStateError):
                    self._consumer.seek(partition, records[0].offset)
                raise
            if handled:
                done = records[-1].offset + 1
                await self._commit(partition, done)
                self._record_lag(partition, done)
                return
        done_offset: int | None = None
        try:
            for record in records:
                await self._process_record(record)
                done_offset = record.offset + 1
                if self._stopping.is_set():
                    break
        except BaseException:
            # The fetch position is already past the whole batch: rewind to the record that
            # failed, or it would be skipped until the next rebalance.
            rewind_to = done_offset if done_offset is not None else records[0].offset
            with contextlib.suppress(IllegalStateError):  # no longer ours: it redelivers anyway
                self._consumer.seek(partition, rewind_to)
            raise
        finally:
            if done_offset is not None:
                await self._commit(partition, done_offset)
                self._record_lag(partition, done_offset)

    async def _process_batch(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> bool:
        """Hand the whole fetched batch to `batch_handler` (one commit of the effect instead of
        one per record). False means "take the per-record path": a record does not decode, or
        the batch handler refused the batch, so the per-record path isolates the culprit
        (retries, DLQ) while the others are applied one by one."""
        assert self.batch_handler is not None
        events: list[ConsumedEvent[MessageT]] = []
        links: list[Link] = []
        for record in records:
            headers = tuple((key, bytes(value)) for key, value in (record.headers or ()))
            if record.value is None:
                return False
            try:
                message = self.message_type.FromString(record.value)
            except DecodeError:
                return False
            parent = trace.get_current_span(extract_kafka_headers(headers)).get_span_context()
            if parent.is_valid:
                links.append(Link(parent))
            events.append(self._consumed(record, headers, message))
        topic = records[0].topic
        dependency_wait = self.retry_backoff_seconds
        while True:
            with self.tracer.start_as_current_span(
                f"{topic} process",
                kind=SpanKind.CONSUMER,
                links=links,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": topic,
                    "messaging.batch.message_count": len(events),
                    "messaging.consumer.group.name": self.group_id,
                },
            ):
                try:
                    await self.batch_handler(events)
                except Exception as exc:
                    if not is_transient(exc):
                        self.log.warning(
                            "kafka_batch_fallback", topic=topic, size=len(events), error=repr(exc)
                        )
                        return False
                    if self._stopping.is_set():
                        raise
                    self._count_retry(topic)
                    self.log.warning(
                        "kafka_handler_waiting_for_dependency", topic=topic, error=repr(exc)
                    )
                    await asyncio.sleep(dependency_wait)
                    dependency_wait = min(dependency_wait * 2, MAX_DEPENDENCY_WAIT_SECONDS)
                    continue
            for _ in events:
                self._count(topic, "handled")
            return True

    def _consumed(
        self,
        record: ConsumerRecord[bytes, bytes],
        headers: tuple[tuple[str, bytes], ...],
        message: MessageT,
    ) -> ConsumedEvent[MessageT]:
        return ConsumedEvent(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            message=message,
            headers=headers,
            event_id=_event_id(record, headers),
            consumer_group=self.group_id,
            timestamp_ms=record.timestamp,
        )

    def _record_lag(self, partition: TopicPartition, committed: int) -> None:
        if self.metrics is None:
            return
        end = self._consumer.highwater(partition)
        if end is not None:
            self.metrics.lag.labels(partition.topic, str(partition.partition), self.group_id).set(
                max(0, end - committed)
            )

    def _count_retry(self, topic: str) -> None:
        if self.metrics is not None:
            self.metrics.retries.labels(topic, self.group_id).inc()

    def _count(self, topic: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.records.labels(topic, self.group_id, outcome).inc()

    async def _commit(self, partition: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({partition: offset})
        except (CommitFailedError, IllegalStateError) as exc:
            # The partition moved to another member meanwhile; it will redeliver from the
            # last commit, which idempotent handlers tolerate.
            self.log.warning(
                "kafka_commit_failed", group=self.group_id, partition=str(partition), error=str(exc)
            )

    async def _process_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        headers = tuple((key, bytes(value)) for key, value in (record.headers or ()))
        parent = extract_kafka_headers(headers)
        event_id = _event_id(record, headers)
        with self.tracer.start_as_current_span(
            f"{record.topic} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": record.topic,
                "messaging.kafka.destination.partition": record.partition,
                "messaging.kafka.message.offset": record.offset,
                "messaging.consumer.group.name": self.group_id,
                "messaging.message.id": event_id,
            },
        ) as span:
            try:
                if record.value is None:
                    raise DecodeError("record has no value")
                message = self.message_type.FromString(record.value)
            except DecodeError as exc:
                await self._to_dlq(record, headers, "undecodable", exc, attempts=0)
                span.set_status(Status(StatusCode.ERROR, "undecodable"))
                return
            await self._handle_with_retries(
                record, headers, self._consumed(record, headers, message)
            )

    async def _handle_with_retries(
        self,
        record: ConsumerRecord[bytes, bytes],
        headers: tuple[tuple[str, bytes], ...],
        event: ConsumedEvent[MessageT],
    ) -> None:
        attempt = 0
        dependency_wait = self.retry_backoff_seconds
        while True:
            try:
                await self.handler(event)
                self._count(record.topic, "handled")
                return
            except PoisonMessage as exc:
                await self._to_dlq(record, headers, "poison", exc, attempts=attempt + 1)
                return
            except Exception as exc:
                if is_transient(exc):
                    # A database or service that is down is not the message's fault: wait for
                    # it without limit instead of dead-lettering every record meanwhile. On
                    # shutdown the record stays uncommitted and comes again after the restart.
                    if self._stopping.is_set():
                        raise
                    self._count_retry(record.topic)
                    self.log.warning(
                        "kafka_handler_waiting_for_dependency",
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        error=repr(exc),
                    )
                    await asyncio.sleep(dependency_wait)
                    dependency_wait = min(dependency_wait * 2, MAX_DEPENDENCY_WAIT_SECONDS)
                    continue
                attempt += 1
                if attempt >= self.max_attempts:
                    await self._to_dlq(record, headers, "handler_failed", exc, attempts=attempt)
                    return
                self._count_retry(record.topic)
                self.log.warning(
                    "kafka_handler_retry",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    attempt=attempt,
                    error=repr(exc),
                )
                await asyncio.sleep(self.retry_backoff_seconds * 2 ** (attempt - 1))

    async def _to_dlq(
        self,
        record: ConsumerRecord[bytes, bytes],
        headers: tuple[tuple[str, bytes], ...],
        reason: str,
        error: BaseException,
        *,
        attempts: int,
    ) -> None:
        span = trace.get_current_span()
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, reason))
        target = dlq_topic(record.topic)
        why: list[tuple[str, bytes]] = [
            (DLQ_REASON_HEADER, reason.encode()),
            (DLQ_ERROR_HEADER, f"{type(error).__name__}: {error}".encode()[:1000]),
            (DLQ_TOPIC_HEADER, record.topic.encode()),
            (DLQ_PARTITION_HEADER, str(record.partition).encode()),
            (DLQ_OFFSET_HEADER, str(record.offset).encode()),
            (DLQ_GROUP_HEADER, self.group_id.encode()),
            (DLQ_ATTEMPTS_HEADER, str(attempts).encode()),
        ]
        # The sender's own headers (trace, event id) are kept so the DLQ record can be traced
        # back and replayed as the same event.
        kept = [(k, v) for k, v in headers if not k.startswith("callmesh-dlq-")]
        # Bounded: if the DLQ cannot be written the record is rewound and tried again later
        # (never committed unrecorded), instead of the partition hanging on one send.
        await asyncio.wait_for(
            self.dlq_producer.send_raw(target, record.value, key=record.key, headers=[*kept, *why]),
            self.dlq_send_timeout_seconds,
        )
        self._count(record.topic, "dead_lettered")
        self.log.error(
            "kafka_message_dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            dlq=target,
            reason=reason,
            error=f"{type(error).__name__}: {error}",
        )


_TOPIC_ALREADY_EXISTS = 36


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    with_dlq: bool = True,
) -> None:
    """Create `topics` (and their `.dlq` topics) unless they exist: local/dev convenience.

    In production the platform's topics are created by the chart with proper replication.
    """
    names: list[str] = []
    for topic in topics:
        names.append(topic)
        if with_dlq:
            names.append(dlq_topic(topic))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        response: Any = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor) for name in names]
        )
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                message = topic_error[2] if len(topic_error) > 2 else ""
                raise KafkaError(f"cannot create topic {name}: error {code} {message}")
    finally:
        await admin.close()
