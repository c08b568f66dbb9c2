"""The generated gRPC modules work over a real grpc.aio server on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from callmesh.common.v1 import common_pb2
from callmesh.queue.v1 import queue_pb2, queue_pb2_grpc
from callmesh.routing.v1 import routing_pb2, routing_pb2_grpc


class FixedRouting(routing_pb2_grpc.RoutingServicer):
    """Answers every call with a greeting; hangs up after any result."""

    async def Plan(
        self,
        request: routing_pb2.PlanRequest,
        context: grpc.aio.ServicerContext[routing_pb2.PlanRequest, routing_pb2.PlanReply],
    ) -> routing_pb2.PlanReply:
        return routing_pb2.PlanReply(
            reason=f"greeting:{request.call.tenant_id}",
            state=b"after-greeting",
            verbs=[
                routing_pb2.Verb(id="g", answer=routing_pb2.AnswerVerb()),
                routing_pb2.Verb(
                    id="p",
                    play=routing_pb2.PlayVerb(items=[common_pb2.MediaSource(prompt="hello")]),
                ),
            ],
        )

    async def Continue(
        self,
        request: routing_pb2.ContinueRequest,
        context: grpc.aio.ServicerContext[routing_pb2.ContinueRequest, routing_pb2.PlanReply],
    ) -> routing_pb2.PlanReply:
        return routing_pb2.PlanReply(
            reason=f"done:{request.state.decode()}:{request.result.WhichOneof('outcome')}",
            verbs=[routing_pb2.Verb(hangup=routing_pb2.HangupVerb())],
        )


class OneAgentQueue(queue_pb2_grpc.QueueServicer):
    """Joins the caller, offers agent 101, connects when the offer is answered."""

    async def Wait(
        self,
        request_iterator: AsyncIterator[queue_pb2.CallerMessage],
        context: grpc.aio.ServicerContext[queue_pb2.CallerMessage, queue_pb2.QueueInstruction],
    ) -> AsyncIterator[queue_pb2.QueueInstruction]:
        async for message in request_iterator:
            kind = message.WhichOneof("kind")
            if kind == "join":
                yield queue_pb2.QueueInstruction(
                    joined=queue_pb2.Joined(waiting_id=f"w-{message.join.call_id}", position=1)
                )
                yield queue_pb2.QueueInstruction(
                    offer=queue_pb2.Offer(offer_id="o-1", agent_extension="101")
                )
            elif kind == "offer_update":
                if message.offer_update.status == queue_pb2.OFFER_STATUS_ANSWERED:
                    yield queue_pb2.QueueInstruction(
                        connect=queue_pb2.Connect(offer_id=message.offer_update.offer_id)
                    )
            elif kind == "hangup":
                return


async def start_server(*register: object) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    for servicer in register:
        if isinstance(servicer, routing_pb2_grpc.RoutingServicer):
            routing_pb2_grpc.add_RoutingServicer_to_server(servicer, server)
        elif isinstance(servicer, queue_pb2_grpc.QueueServicer):
            queue_pb2_grpc.add_QueueServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_routing_plan_and_continue_over_grpc() -> None:
    server, address = await start_server(FixedRouting())
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = routing_pb2_grpc.RoutingStub(channel)
            call = routing_pb2.CallContext(call_id="c-1", tenant_id="acme")
            plan = await stub.Plan(routing_pb2.PlanRequest(call=call), timeout=5)
            assert plan.reason == "greeting:acme"
            assert [v.WhichOneof("kind") for v in plan.verbs] == ["answer", "play"]

            following = await stub.Continue(
                routing_pb2.ContinueRequest(
                    call=call,
                    state=plan.state,
                    result=routing_pb2.VerbResult(verb_id="p", completed=routing_pb2.Completed()),
                ),
                timeout=5,
            )
            assert following.reason == "done:after-greeting:completed"
            assert following.verbs[0].WhichOneof("kind") == "hangup"
    finally:
        await server.stop(None)


async def test_queue_wait_is_a_bidirectional_stream() -> None:
    # Only Wait is implemented; the generated base answers UNIMPLEMENTED for the rest.
    server, address = await start_server(OneAgentQueue())  # type: ignore[abstract]
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = queue_pb2_grpc.QueueStub(channel)
            stream = stub.Wait(timeout=5)
            await stream.write(
                queue_pb2.CallerMessage(
                    join=queue_pb2.Join(tenant_id="acme", queue_id="support", call_id="c-9")
                )
            )
            joined = await stream.read()
            offer = await stream.read()
            assert isinstance(joined, queue_pb2.QueueInstruction)
            assert isinstance(offer, queue_pb2.QueueInstruction)
            assert joined.joined.waiting_id == "w-c-9"
            assert offer.offer.agent_extension == "101"

            await stream.write(
                queue_pb2.CallerMessage(
                    offer_update=queue_pb2.OfferUpdate(
                        offer_id=offer.offer.offer_id, status=queue_pb2.OFFER_STATUS_ANSWERED
                    )
                )
            )
            connect = await stream.read()
            assert isinstance(connect, queue_pb2.QueueInstruction)
            assert connect.WhichOneof("kind") == "connect"
            assert connect.connect.offer_id == "o-1"

            await stream.write(queue_pb2.CallerMessage(hangup=queue_pb2.Hangup()))
            await stream.done_writing()
            assert await stream.read() == grpc.aio.EOF
    finally:
        await server.stop(None)
