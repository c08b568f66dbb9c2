"""Asks routing whether a routing document is valid before the api stores it.

Routing owns what the document means (ARCHITECTURE §2); the api only stores it. The call has a
deadline: if routing cannot answer, nothing is saved and the admin gets 503 (never a document
that nobody checked).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import grpc
from callmesh.routing.v1 import routing_pb2, routing_pb2_grpc
from callmesh_core.errors import Unavailable

from .config_service import ConfigProblem

VALIDATE_TIMEOUT_SECONDS = 10.0


class RoutingGrpcValidator:
    def __init__(
        self, channel: grpc.aio.Channel, timeout: float = VALIDATE_TIMEOUT_SECONDS
    ) -> None:
        self._stub = routing_pb2_grpc.RoutingStub(channel)
        self._timeout = timeout

    async def validate(
        self, tenant_id: uuid.UUID, document: Mapping[str, Any]
    ) -> list[ConfigProblem]:
        request = routing_pb2.ValidateConfigRequest(
            tenant_id=str(tenant_id), document_json=json.dumps(document)
        )
        try:
            reply = await self._stub.ValidateConfig(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"routing could not validate the configuration ({exc.code().name}); "
                "nothing was saved"
            ) from None
        return [ConfigProblem(p.path, p.message) for p in reply.problems]
