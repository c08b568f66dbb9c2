"""The `Routing` gRPC servicer: contract in, core engine, contract out.

Per request: find the tenant's compiled configuration (waiting at most the request's own
budget, else UNAVAILABLE so the edge plays a failure instead of leaving the caller in
silence), prefetch ICM sources when the tenant uses ICM, run the engine with the current time,
then log the decision's reason with the call id and put it on the request's span
(`callmesh.routing.reason`, docs/observability.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from callmesh.routing.v1 import routing_pb2 as pb
from callmesh.routing.v1 import routing_pb2_grpc
from callmesh_core.errors import Unavailable
from callmesh_core.logging import EventLogger, bind_call_id
from opentelemetry import trace

from callmesh_routing import contract
from callmesh_routing.core import engine
from callmesh_routing.core.document import parse_json, validate_document
from callmesh_routing.core.engine import CallContext, Decision, LiveView, Origin
from callmesh_routing.core.icm import IcmSource
from callmesh_routing.core.loading import LoadError, Problem
from callmesh_routing.icm_sources import IcmPrefetch
from callmesh_routing.tenants import BIG_DOCUMENT_BYTES, LoadedTenant, TenantConfigs

REASON_ATTRIBUTE = "callmesh.routing.reason"
CALL_ID_ATTRIBUTE = "callmesh.call.id"
# Time kept back from the caller's deadline to build and send the UNAVAILABLE answer.
DEADLINE_MARGIN_SECONDS = 0.05


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _validate(document_json: str, tenant_id: str) -> list[Problem]:
    try:
        return validate_document(parse_json(document_json), tenant_id)
    except LoadError as exc:
        return exc.problems


class RoutingServicer(routing_pb2_grpc.RoutingServicer):
    def __init__(
        self,
        tenants: TenantConfigs,
        icm: IcmPrefetch,
        log: EventLogger,
        *,
        config_wait_seconds: float,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._tenants = tenants
        self._icm = icm
        self._log = log
        self._config_wait = config_wait_seconds
        self._clock = clock

    async def Plan(self, request: pb.PlanRequest, context: Any) -> pb.PlanReply:
        call = request.call
        with bind_call_id(call.call_id or None):
            loaded = await self._tenant(call.tenant_id, context)
            core_call = contract.call_context(call)
            now = self._clock()
            live = LiveView(icm_sources=await self._icm_sources(loaded, core_call, now))
            decision = engine.plan(loaded.config, core_call, now, live)
            return self._reply(decision, loaded, call, "plan")

    async def Continue(self, request: pb.ContinueRequest, context: Any) -> pb.PlanReply:
        call = request.call
        with bind_call_id(call.call_id or None):
            loaded = await self._tenant(call.tenant_id, context)
            core_call = contract.call_context(call)
            now = self._clock()
            live = LiveView(icm_sources=await self._icm_sources(loaded, core_call, now))
            # Anything that is not our UTF-8 token is handed on as is: the engine refuses it
            # and sends the call to the default route.
            token = request.state.decode("utf-8", errors="replace")
            result = contract.verb_result(request.result)
            decision = engine.resume(loaded.config, core_call, now, live, token, result)
            return self._reply(decision, loaded, call, "continue")

    async def ValidateConfig(
        self, request: pb.ValidateConfigRequest, context: Any
    ) -> pb.ValidateConfigReply:
        problems: list[Problem]
        if not request.tenant_id:
            problems = [Problem("", "tenant_id is required")]
        elif len(request.document_json) >= BIG_DOCUMENT_BYTES:
            # Seconds of CPU for a big rate table: off the event loop, so calls keep flowing.
            problems = await asyncio.to_thread(_validate, request.document_json, request.tenant_id)
        else:
            problems = _validate(request.document_json, request.tenant_id)
        self._log.info(
            "routing_config_validated", tenant_id=request.tenant_id, problems=len(problems)
        )
        return pb.ValidateConfigReply(
            problems=[pb.ConfigProblem(path=p.path, message=p.message) for p in problems]
        )

    # -- helpers -----------------------------------------------------------------------------

    async def _tenant(self, tenant_id: str, context: Any) -> LoadedTenant:
        wait = self._config_wait
        remaining = context.time_remaining() if context is not None else None
        if remaining is not None:
            wait = min(wait, remaining - DEADLINE_MARGIN_SECONDS)
        try:
            return await self._tenants.get(tenant_id, wait)
        except Unavailable as exc:
            # The server maps it to UNAVAILABLE; the edge plays its failure message.
            self._log.warning("routing_unavailable", tenant_id=tenant_id, error=exc.message)
            raise

    async def _icm_sources(
        self, loaded: LoadedTenant, call: CallContext, now: datetime
    ) -> Sequence[IcmSource]:
        window = loaded.document.icm_window_days
        if window is None or call.origin is not Origin.TRUNK:
            return ()  # no ICM step can run for this call: ask nobody
        caller = loaded.config.numbering.resolve(call.caller)
        if caller is None or caller.is_internal:
            return ()
        return await self._icm.sources(
            loaded.tenant_id, caller.canonical, call.call_id, now, window
        )

    def _reply(
        self, decision: Decision, loaded: LoadedTenant, call: pb.CallContext, rpc: str
    ) -> pb.PlanReply:
        reason = decision.reason
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(REASON_ATTRIBUTE, reason)
            span.set_attribute(CALL_ID_ATTRIBUTE, call.call_id)
        prefix = f"{decision.scenario or 'routing'}#"
        reply = pb.PlanReply(
            verbs=[
                contract.verb(item, f"{prefix}{index}") for index, item in enumerate(decision.verbs)
            ],
            reason=reason,
            state=decision.state.encode(),
            scenario_id=decision.scenario,
            scenario_version=loaded.version,
        )
        self._log.info(
            "routing_decision",
            rpc=rpc,
            call_id=call.call_id,
            tenant_id=call.tenant_id,
            scenario=decision.scenario,
            version=loaded.version,
            verbs=",".join(v.WhichOneof("kind") or "?" for v in reply.verbs),
            reason=reason,
        )
        return reply
