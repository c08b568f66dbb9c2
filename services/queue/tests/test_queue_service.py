"""The Queue gRPC service over real streams, with its state in a real PostgreSQL schema and its
events on the real Kafka broker."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import grpc
import pytest
from callmesh.events.v1 import calls_pb2
from callmesh.queue.v1 import queue_pb2
from callmesh_core.kafka import EventProducer
from callmesh_core.logging import EventLogger
from callmesh_queue.events import CallEventOutboxRelay
from callmesh_queue.runtime import OWNER_METADATA
from callmesh_queue.store import QueueStore
from opentelemetry import trace

from .conftest import Caller, new_caller, read_call_events, support_queue

TENANT = "tenant-a"


async def busy_alice(replica: Any, store: QueueStore, tenant: str = TENANT) -> Caller:
    """Alice logged in and talking to a first caller, so everyone after that waits."""
    await store.put_queue(tenant, "support", support_queue())
    await replica.runtime.lease_tick()
    state = await replica.stub.AgentLogin(
        queue_pb2.AgentLoginRequest(tenant_id=tenant, agent_user_id="alice")
    )
    assert state.status == queue_pb2.AGENT_STATUS_AVAILABLE
    first = new_caller(0)
    await first.open(replica.stub, tenant, "support")
    await first.answer(await first.read_until("offer"))
    return first


async def test_three_callers_are_served_first_come_first_served_with_positions(
    start_replica: Any, store: QueueStore, kafka_bootstrap: str
) -> None:
    replica = await start_replica(kafka_bootstrap=kafka_bootstrap)
    talking = await busy_alice(replica, store)
    callers = [new_caller(i) for i in (1, 2, 3)]
    joined = [await c.open(replica.stub, TENANT, "support") for c in callers]
    assert [j.position for j in joined] == [1, 2, 3]
    # One agent, nobody's average yet: the queue's default 60 s per place ahead.
    assert [j.estimated_wait.seconds for j in joined] == [60, 120, 180]
    assert len({j.waiting_id for j in joined}) == 3
    for caller, position in zip(callers, (1, 2, 3), strict=True):
        assert (await caller.read_until("play_music")).music.music_class == "default"
        announce = await caller.read_until("announce")
        assert announce.position == position

    served: list[str] = []
    previous = talking
    for caller in callers:
        await previous.end_connection()
        offer = await caller.read_until("offer")
        assert offer.agent_user_id == "alice"
        await caller.answer(offer)
        served.append(caller.call_id)
        previous = caller
    await previous.end_connection()
    assert served == [c.call_id for c in callers]
    # Each caller heard their place shrink, in order, and nothing out of order.
    assert callers[0].announcements() == [1]
    assert callers[1].announcements() == [2, 1]
    assert callers[2].announcements() == [3, 2, 1]

    # Joined and answered facts for each served caller, numbered per call on leg "queue".
    events = await read_call_events(kafka_bootstrap, [c.call_id for c in callers], expected=6)
    by_call: dict[str, list[tuple[int, str]]] = {}
    for event in events:
        assert event.leg == "queue" and event.tenant_id == TENANT and event.event_id
        by_call.setdefault(event.call_id, []).append((event.seq, event.WhichOneof("kind")))
    for caller in callers:
        assert sorted(by_call[caller.call_id]) == [(1, "queue_joined"), (2, "queue_answered")]


async def test_a_callback_request_keeps_the_callers_place(
    start_replica: Any, store: QueueStore, kafka_bootstrap: str
) -> None:
    replica = await start_replica(kafka_bootstrap=kafka_bootstrap)
    talking = await busy_alice(replica, store)
    first, second, third = (new_caller(i) for i in (1, 2, 3))
    for caller in (first, second, third):
        await caller.open(replica.stub, TENANT, "support")
        await caller.read_until("announce")  # the position on joining
    await second.send(dtmf=queue_pb2.Dtmf(digit="1"))
    accepted = await second.read_until("callback_accepted")
    assert accepted.position == 2 and accepted.number == second.number
    assert await second.ended()  # the caller may hang up; the place stays

    stats = await replica.stub.GetQueueStats(
        queue_pb2.GetQueueStatsRequest(tenant_id=TENANT, queue_ids=["support"])
    )
    (figures,) = stats.queues
    assert (figures.waiting, figures.callbacks_pending) == (2, 1)
    assert figures.agents_on_call == 1 and figures.agents_available == 0

    await talking.end_connection()
    await first.answer(await first.read_until("offer"))
    # The callback request is still ahead of the third caller.
    assert (await third.read_until("announce")).position == 2
    await first.end_connection()
    # Alice is now rung for the callback, not for the third caller.
    state = await replica.stub.GetAgentState(
        queue_pb2.GetAgentStateRequest(tenant_id=TENANT, agent_user_id="alice")
    )
    assert state.status == queue_pb2.AGENT_STATUS_RINGING
    assert replica.runtime._shards[TENANT].shard.engine.waiting("support")[0] == (
        accepted.callback_id.removeprefix("cb-")
    )

    events = await read_call_events(kafka_bootstrap, [second.call_id], expected=2)
    kinds = sorted((e.seq, e.WhichOneof("kind")) for e in events)
    assert kinds == [(1, "queue_joined"), (2, "queue_callback_requested")]


async def test_hang_up_while_waiting_is_an_abandon_and_moves_the_line_up(
    start_replica: Any, store: QueueStore, kafka_bootstrap: str
) -> None:
    replica = await start_replica(kafka_bootstrap=kafka_bootstrap)
    await busy_alice(replica, store)
    first, second = new_caller(1), new_caller(2)
    await first.open(replica.stub, TENANT, "support")
    await second.open(replica.stub, TENANT, "support")
    await second.read_until("announce")
    await first.send(hangup=queue_pb2.Hangup())
    assert await first.ended()
    assert (await second.read_until("announce")).position == 1
    events = await read_call_events(kafka_bootstrap, [first.call_id], expected=2)
    abandoned = [e.queue_abandoned for e in events if e.HasField("queue_abandoned")]
    assert len(abandoned) == 1 and abandoned[0].position == 1


async def test_agent_state_rpcs(start_replica: Any, store: QueueStore) -> None:
    replica = await start_replica()
    await store.put_queue(TENANT, "support", support_queue())
    await store.put_queue(TENANT, "sales", support_queue("sales"))
    stub = replica.stub

    def agent(**fields: Any) -> dict[str, Any]:
        return {"tenant_id": TENANT, "agent_user_id": "alice", **fields}

    state = await stub.GetAgentState(queue_pb2.GetAgentStateRequest(**agent()))
    assert state.status == queue_pb2.AGENT_STATUS_LOGGED_OUT and not state.queue_ids

    state = await stub.AgentLogin(queue_pb2.AgentLoginRequest(**agent()))
    assert state.status == queue_pb2.AGENT_STATUS_AVAILABLE
    assert sorted(state.queue_ids) == ["sales", "support"]
    since = state.since.ToNanoseconds()
    assert since > 0
    again = await stub.AgentLogin(queue_pb2.AgentLoginRequest(**agent()))
    assert again.status == queue_pb2.AGENT_STATUS_AVAILABLE
    assert again.since.ToNanoseconds() == since  # idempotent: nothing changed

    paused = await stub.AgentPause(queue_pb2.AgentPauseRequest(**agent(reason="lunch")))
    assert (paused.status, paused.pause_reason) == (queue_pb2.AGENT_STATUS_PAUSED, "lunch")
    stats = await stub.GetQueueStats(queue_pb2.GetQueueStatsRequest(tenant_id=TENANT))
    assert {q.queue_id: q.agents_paused for q in stats.queues} == {"sales": 1, "support": 1}

    state = await stub.AgentUnpause(queue_pb2.AgentUnpauseRequest(**agent()))
    assert state.status == queue_pb2.AGENT_STATUS_AVAILABLE and not state.pause_reason
    state = await stub.AgentLogout(queue_pb2.AgentLogoutRequest(**agent()))
    assert state.status == queue_pb2.AGENT_STATUS_LOGGED_OUT
    state = await stub.AgentLogout(queue_pb2.AgentLogoutRequest(**agent()))
    assert state.status == queue_pb2.AGENT_STATUS_LOGGED_OUT

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.AgentPause(queue_pb2.AgentPauseRequest(**agent(reason="x")))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.AgentLogin(
            queue_pb2.AgentLoginRequest(tenant_id="no-such-tenant", agent_user_id="alice")
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as partial:
        await stub.AgentLogin(queue_pb2.AgentLoginRequest(**agent(queue_ids=["sales"])))
    assert partial.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_watch_queue_stats_streams_changes(start_replica: Any, store: QueueStore) -> None:
    replica = await start_replica()
    await store.put_queue(TENANT, "support", support_queue())
    await replica.runtime.lease_tick()
    watch = replica.stub.WatchQueueStats(
        queue_pb2.WatchQueueStatsRequest(
            tenant_id=TENANT, queue_ids=["support"], min_interval={"nanos": 100_000_000}
        )
    )
    first = await watch.read()
    assert (first.agents_logged_in, first.waiting) == (0, 0)
    await replica.stub.AgentLogin(
        queue_pb2.AgentLoginRequest(tenant_id=TENANT, agent_user_id="alice")
    )
    second = await watch.read()
    assert (second.agents_logged_in, second.agents_available) == (1, 1)
    watch.cancel()


async def test_a_replica_that_does_not_own_the_tenant_redirects_to_the_owner(
    start_replica: Any, store: QueueStore
) -> None:
    owner = await start_replica("queue-a")
    await store.put_queue(TENANT, "support", support_queue())
    await owner.runtime.lease_tick()
    assert owner.runtime.owned_tenants() == [TENANT]
    await owner.stub.AgentLogin(
        queue_pb2.AgentLoginRequest(tenant_id=TENANT, agent_user_id="alice")
    )
    other = await start_replica("queue-b")
    assert other.runtime.owned_tenants() == []

    caller = Caller(call_id=str(uuid.uuid4()), number="+4930555")
    with pytest.raises(grpc.aio.AioRpcError) as redirected:
        await caller.open(other.stub, TENANT, "support")
    assert redirected.value.code() == grpc.StatusCode.UNAVAILABLE
    metadata = dict(redirected.value.trailing_metadata() or ())
    assert metadata[OWNER_METADATA] == owner.address
    # Following the redirect works; so does any other request, which is redirected alike.
    joined = await caller.open(owner.stub, TENANT, "support")
    assert joined.position == 1
    with pytest.raises(grpc.aio.AioRpcError) as stats:
        await other.stub.GetQueueStats(queue_pb2.GetQueueStatsRequest(tenant_id=TENANT))
    assert dict(stats.value.trailing_metadata() or ())[OWNER_METADATA] == owner.address


async def test_rejoin_by_waiting_id_keeps_the_place_and_unknown_ids_are_not_found(
    start_replica: Any, store: QueueStore
) -> None:
    replica = await start_replica()
    await busy_alice(replica, store)
    first, second = new_caller(1), new_caller(2)
    await first.open(replica.stub, TENANT, "support")
    joined = await second.open(replica.stub, TENANT, "support")
    second.call.cancel()  # the edge's stream broke (no hang-up)

    again = Caller(call_id=second.call_id, number=second.number)
    rejoined = await again.open(replica.stub, TENANT, "", waiting_id=joined.waiting_id)
    assert rejoined.waiting_id == joined.waiting_id
    assert rejoined.position == 2
    assert rejoined.entered_at == joined.entered_at

    stranger = Caller(call_id=str(uuid.uuid4()), number="+4930999")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stranger.open(replica.stub, TENANT, "", waiting_id=str(uuid.uuid4()))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_caller_whose_stream_stays_away_past_the_grace_is_hung_up(
    start_replica: Any, store: QueueStore
) -> None:
    replica = await start_replica(rejoin_grace_seconds=0.2)
    await busy_alice(replica, store)
    gone, next_in_line = new_caller(1), new_caller(2)
    await gone.open(replica.stub, TENANT, "support")
    await next_in_line.open(replica.stub, TENANT, "support")
    await next_in_line.read_until("announce")
    gone.call.cancel()  # the edge died with the call: no hang-up ever comes
    await asyncio.sleep(0.3)
    await replica.runtime.lease_tick()
    assert (await next_in_line.read_until("announce")).position == 1
    stats = await replica.stub.GetQueueStats(queue_pb2.GetQueueStatsRequest(tenant_id=TENANT))
    assert (stats.queues[0].waiting, stats.queues[0].abandoned_today) == (1, 1)


async def test_a_survey_after_the_agent_hangs_up_is_published_with_the_rating(
    start_replica: Any, store: QueueStore, kafka_bootstrap: str
) -> None:
    replica = await start_replica(kafka_bootstrap=kafka_bootstrap)
    await store.put_queue(TENANT, "support", support_queue(), {"survey": True})
    await replica.runtime.lease_tick()
    await replica.stub.AgentLogin(
        queue_pb2.AgentLoginRequest(tenant_id=TENANT, agent_user_id="alice")
    )
    caller = new_caller(1)
    await caller.open(replica.stub, TENANT, "support", language="de")
    await caller.answer(await caller.read_until("offer"))
    await caller.send(connection_ended=queue_pb2.ConnectionEnded(ended_by=queue_pb2.ENDED_BY_AGENT))
    survey = await caller.read_until("start_survey")
    assert survey.language == "de" and survey.prompts[0].prompt == "queue-survey"
    await caller.send(survey_answer=queue_pb2.SurveyAnswer(rating=5))
    await caller.read_until("finish")
    assert await caller.ended()
    events = await read_call_events(kafka_bootstrap, [caller.call_id], expected=3)
    ratings = [
        (e.seq, e.survey_answered.agent_user_id, e.survey_answered.rating)
        for e in events
        if e.HasField("survey_answered")
    ]
    assert ratings == [(3, "alice", 5)]


async def test_a_queue_nobody_serves_sends_the_caller_to_its_overflow_target(
    start_replica: Any, store: QueueStore, kafka_bootstrap: str
) -> None:
    replica = await start_replica(kafka_bootstrap=kafka_bootstrap)
    config = support_queue()
    config["overflow"] = {"kind": "voicemail", "destination": "box-7"}
    await store.put_queue(TENANT, "support", config)
    await replica.runtime.lease_tick()
    caller = new_caller(1)
    caller.call = replica.stub.Wait()
    await caller.send(
        join=queue_pb2.Join(
            tenant_id=TENANT, queue_id="support", call_id=caller.call_id, caller_number="+1"
        )
    )
    overflow = (await caller.read()).overflow
    assert overflow.reason == queue_pb2.OVERFLOW_REASON_NO_AGENTS
    assert overflow.target.voicemail_box == "box-7"
    assert await caller.ended()
    (event,) = await read_call_events(kafka_bootstrap, [caller.call_id], expected=1)
    assert event.queue_left.reason == calls_pb2.QUEUE_LEFT_REASON_NO_AGENTS
    assert event.queue_left.next.voicemail_box == "box-7"


async def test_events_wait_in_the_outbox_until_a_relay_publishes_them(
    start_replica: Any, store: QueueStore, queue_pool: Any, kafka_bootstrap: str
) -> None:
    # No relay at first (as if the broker were down or the replica died before sending).
    replica = await start_replica()
    await busy_alice(replica, store)
    caller = new_caller(1)
    await caller.open(replica.stub, TENANT, "support")
    pending = await queue_pool.fetchval(
        "SELECT count(*) FROM call_event_outbox WHERE call_id = $1", caller.call_id
    )
    assert pending == 1
    relay = CallEventOutboxRelay(
        queue_pool,
        await started_producer(kafka_bootstrap),
        EventLogger(logging.getLogger("callmesh.test.relay")),
    )
    try:
        assert await relay.publish_pending() >= 1
    finally:
        await relay.producer.stop()
    assert await queue_pool.fetchval("SELECT count(*) FROM call_event_outbox") == 0
    (event,) = await read_call_events(kafka_bootstrap, [caller.call_id], expected=1)
    assert (event.seq, event.WhichOneof("kind")) == (1, "queue_joined")


async def started_producer(bootstrap: str) -> EventProducer:
    producer = EventProducer(bootstrap_servers=bootstrap, tracer=trace.get_tracer("test"))
    await producer.start()
    return producer


async def test_periodic_announcements_are_driven_by_the_engines_timers(
    start_replica: Any, store: QueueStore
) -> None:
    replica = await start_replica()
    await store.put_queue(
        TENANT,
        "support",
        support_queue(position_announce_interval=0.3, wait_announce_interval=0.6),
    )
    await replica.runtime.lease_tick()
    await replica.stub.AgentLogin(
        queue_pb2.AgentLoginRequest(tenant_id=TENANT, agent_user_id="alice")
    )
    talking = new_caller(0)
    await talking.open(replica.stub, TENANT, "support")
    await talking.answer(await talking.read_until("offer"))
    caller = new_caller(1)
    await caller.open(replica.stub, TENANT, "support")
    heard = [await caller.read_until("announce") for _ in range(4)]
    # On joining: position and wait; then the position every 0.3 s, the wait every 0.6 s.
    assert [a.position for a in heard] == [1, 1, 1, 1]
    assert [a.HasField("estimated_wait") for a in heard] == [True, False, True, False]
