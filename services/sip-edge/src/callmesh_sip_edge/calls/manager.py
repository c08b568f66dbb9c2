"""The B2BUA's transaction-user side: new INVITEs become call sessions; SIP events find legs.

:class:`CallManager` is what :class:`~..edge.SipEdge` hands INVITEs, CANCELs, in-dialog
requests and every non-request transaction event to. It

- identifies the caller of a new INVITE: an IP-authenticated trunk (`Provisioning.
  GetTrunkBySource` for the source address, cached), or a user of the tenant whose SIP domain
  is the From host, authenticated with digest like REGISTER but through ``407
  Proxy-Authenticate`` (same nonces, nonce-count replay check, bans and account lockout);
- refuses loops (``482``: an INVITE carrying the Call-ID of a leg this replica placed, i.e. our
  own call came back to us) and, while draining, new calls (``503`` with Retry-After);
- starts a :class:`~.session.CallSession` with a platform call id (uuid4) and leg ``a``;
- routes responses, ACKs, timeouts, CANCELs and in-dialog requests to the leg they belong to
  (by client transaction, by the INVITE's server transaction, by Call-ID and local tag, and by
  Call-ID alone for ACKs that match nothing else: pyVoIP ACKs a 2xx with a new To tag);
- implements the :class:`~.legs.SipPort` the legs send through.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from callmesh.common.v1 import common_pb2
from callmesh.provisioning.v1 import provisioning_pb2 as ppb
from callmesh.provisioning.v1 import provisioning_pb2_grpc
from callmesh.routing.v1 import routing_pb2
from callmesh_core.logging import EventLogger

from ..abuse import AbuseGuard
from ..directory import Directory, DirectoryUnavailable
from ..edge import RegistrarService
from ..location import LocationStore
from ..sip.digest import AuthOutcome, DigestCredentials, parse_credentials
from ..sip.errors import DigestError, SipParseError, TransactionError
from ..sip.headers import NameAddr
from ..sip.message import SipRequest, SipResponse, build_response, new_call_id, new_tag
from ..sip.transaction import (
    AckReceived,
    ClientTransaction,
    Destination,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TransactionEvent,
    TransactionTimeout,
)
from ..sip.uri import SipUri
from ..transport import SipEndpoint
from .events import CallEventLog, CallEventWriter
from .legs import Leg, SipPort, UacLeg, UasLeg
from .media import MediaAnchor
from .session import CallSession, Contact, RoutingClient
from .verbs import VerbRegistry, default_verbs

RETRY_AFTER_SECONDS = 5
# How long a finished leg is still found (late retransmissions, BYE responses).
LEG_LINGER_SECONDS = 32.0
TRUNK_CACHE_SECONDS = 10.0

Direction = common_pb2.CallDirection


@dataclass(frozen=True, slots=True)
class TrunkEntry:
    tenant_id: str
    trunk_id: str
    host: str
    port: int
    tech_prefix: str


class Trunks:
    """Trunks by source address and by id, read over `Provisioning`, cached briefly."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = provisioning_pb2_grpc.ProvisioningStub(channel)
        self._timeout = timeout
        self._clock = clock
        self._by_source: dict[str, tuple[float, TrunkEntry | None]] = {}
        self._by_id: dict[tuple[str, str], tuple[float, TrunkEntry | None]] = {}

    @staticmethod
    def _entry(trunk: ppb.Trunk) -> TrunkEntry:
        return TrunkEntry(
            trunk.tenant_id, trunk.trunk_id, trunk.host, trunk.port or 5060, trunk.tech_prefix
        )

    async def by_source(self, address: str) -> TrunkEntry | None:
        now = self._clock()
        cached = self._by_source.get(address)
        if cached is not None and now - cached[0] < TRUNK_CACHE_SECONDS:
            return cached[1]
        found: TrunkEntry | None
        try:
            trunk = await self._stub.GetTrunkBySource(
                ppb.GetTrunkBySourceRequest(address=address), timeout=self._timeout
            )
            found = self._entry(trunk) if trunk.enabled else None
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise DirectoryUnavailable(f"GetTrunkBySource: {exc.code().name}") from exc
            found = None
        if len(self._by_source) > 10_000:
            self._by_source.clear()
        self._by_source[address] = (now, found)
        return found

    async def by_id(self, tenant_id: str, trunk_id: str) -> TrunkEntry | None:
        now = self._clock()
        key = (tenant_id, trunk_id)
        cached = self._by_id.get(key)
        if cached is not None and now - cached[0] < TRUNK_CACHE_SECONDS:
            return cached[1]
        found: TrunkEntry | None
        try:
            trunk = await self._stub.GetTrunk(
                ppb.GetTrunkRequest(tenant_id=tenant_id, trunk_id=trunk_id), timeout=self._timeout
            )
            found = self._entry(trunk) if trunk.enabled else None
        except grpc.aio.AioRpcError:
            found = None
        self._by_id[key] = (now, found)
        return found


class CallManager:
    """See the module docstring."""

    @property
    def transport(self) -> str:
        return "UDP"

    @property
    def sip(self) -> SipPort:
        return self

    def __init__(
        self,
        *,
        endpoint: SipEndpoint,
        registrar: RegistrarService,
        directory: Directory,
        location: LocationStore,
        abuse: AbuseGuard,
        routing: RoutingClient,
        trunks: Trunks,
        events: CallEventWriter,
        log: EventLogger,
        media: MediaAnchor | None = None,
        replica: str,
        advertised_host: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        verbs: VerbRegistry | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.registrar = registrar
        self.directory = directory
        self.location = location
        self.abuse = abuse
        self.routing = routing
        self.trunks = trunks
        self.events = events
        self.media = media
        self.log = log
        self.replica = replica
        self._advertised = advertised_host
        self._wall_clock = wall_clock
        self.verbs = verbs or default_verbs()
        self.sessions: dict[str, CallSession] = {}
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._by_client: dict[tuple[str, str], Leg] = {}
        self._by_server: dict[tuple[str, ...], UasLeg] = {}
        self._by_dialog: dict[tuple[str, str], Leg] = {}
        self._by_call_id: dict[str, Leg] = {}
        self._pending: dict[tuple[str, ...], asyncio.Task[None]] = {}
        self.calls_started = 0

    # -- SipPort ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._advertised or self.endpoint.host

    @property
    def port(self) -> int:
        return self.endpoint.port

    @property
    def contact(self) -> str:
        return f"<sip:{self.replica}@{self.host}:{self.port}>"

    def now(self) -> float:
        return self.endpoint.now()

    def send_request(
        self, request: SipRequest, destination: Destination, owner: Leg
    ) -> ClientTransaction | None:
        try:
            transaction = self.endpoint.layer.send_request(request, destination, self.now())
        except TransactionError as exc:
            self.log.info("call_send_failed", error=str(exc))
            return None
        self._by_client[transaction.key] = owner
        self.endpoint.flush_soon()
        return transaction

    def send_response(self, transaction: ServerTransaction, response: SipResponse) -> None:
        self.endpoint.layer.send_response(transaction, response, self.now())
        self.endpoint.flush_soon()

    def send_stateless(self, message: SipRequest, destination: Destination) -> None:
        self.endpoint.layer.send_stateless(message, destination)
        self.endpoint.flush_soon()

    def forget(self, leg: Leg) -> None:
        asyncio.get_running_loop().call_later(LEG_LINGER_SECONDS, self._drop_leg, leg)

    def _drop_leg(self, leg: Leg) -> None:
        for client_key in [k for k, v in self._by_client.items() if v is leg]:
            del self._by_client[client_key]
        for dialog_key in [k for k, v in self._by_dialog.items() if v is leg]:
            del self._by_dialog[dialog_key]
        for server_key in [k for k, v in self._by_server.items() if v is leg]:
            del self._by_server[server_key]
        if self._by_call_id.get(leg.sip_call_id) is leg:
            del self._by_call_id[leg.sip_call_id]

    # -- CallServices ----------------------------------------------------------------------

    def domain_for_tenant(self, tenant_id: str) -> str:
        return self.directory.domain_of(tenant_id) or self.host

    async def extension_contacts(self, tenant_id: str, extension: str) -> list[Contact]:
        bindings = await self.location.lookup(tenant_id, extension)
        return [
            # Sent on the flow the REGISTER came from (what a phone behind NAT can receive).
            Contact(
                b.contact_uri,
                Destination(b.transport, b.host, b.port),
                user_id=b.user_id,
                extension=extension,
            )
            for b in bindings
        ]

    async def trunk_contact(self, tenant_id: str, trunk_id: str, dialed: str) -> Contact | None:
        trunk = await self.trunks.by_id(tenant_id, trunk_id)
        if trunk is None:
            return None
        uri = f"sip:{trunk.tech_prefix}{dialed}@{trunk.host}:{trunk.port}"
        return Contact(uri, Destination("UDP", trunk.host, trunk.port))

    def new_outgoing_invite(
        self,
        session: CallSession,
        contact: Contact,
        *,
        to_uri: str,
        body: bytes,
        caller_id: routing_pb2.CallerIdRule,
        extra_headers: list[tuple[str, str]],
    ) -> SipRequest:
        from ..sip.dialog import via_value
        from ..sip.uri import parse_uri

        incoming = session.a.request
        domain = session.caller_domain
        number, name = session.from_user, session.from_name
        mode = caller_id.mode
        headers: list[tuple[str, str]] = []
        if mode == routing_pb2.CALLER_ID_MODE_OVERRIDE:
            number, name = caller_id.number or number, caller_id.name or name
        if caller_id.name_prefix:
            name = caller_id.name_prefix + name
        asserted = NameAddr(SipUri(domain, user=number), name or None)
        if mode == routing_pb2.CALLER_ID_MODE_ANONYMOUS or session.context.caller_withheld:
            shown = NameAddr(SipUri("anonymous.invalid", user="anonymous"), "Anonymous")
            headers.append(("Privacy", "id"))
        else:
            shown = asserted
        max_forwards = (incoming.max_forwards if incoming.max_forwards is not None else 70) - 1
        request = SipRequest("INVITE", parse_uri(contact.uri))
        request.add_header("Via", via_value(self.transport, self.host, self.port))
        request.add_header("Max-Forwards", str(max_forwards))
        request.add_header("From", str(shown.with_tag(new_tag())))
        request.add_header("To", to_uri)
        request.add_header("Call-ID", new_call_id(self.host))
        request.add_header("CSeq", "1 INVITE")
        request.add_header("Contact", self.contact)
        # The platform vouches for the caller's identity (RFC 3325), also when it is withheld.
        request.add_header("P-Asserted-Identity", str(asserted))
        request.add_header("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO")
        for name_, value in headers + extra_headers:
            request.add_header(name_, value)
        if body:
            request.add_header("Content-Type", incoming.content_type or "application/sdp")
            request.body = body
        return request

    def register_leg(self, leg: Leg) -> None:
        self._by_call_id[leg.sip_call_id] = leg
        if isinstance(leg, UasLeg):
            self._by_server[leg.invite.key] = leg
            self._by_dialog[(leg.sip_call_id, leg.local_tag)] = leg
        elif isinstance(leg, UacLeg):
            self._by_dialog[(leg.sip_call_id, leg.request.from_.tag or "")] = leg

    def session_ended(self, session: CallSession) -> None:
        self.sessions.pop(session.call_id, None)
        if not self.sessions:
            self._idle.set()

    @property
    def active_calls(self) -> int:
        return len(self.sessions)

    async def wait_calls_ended(self) -> None:
        """Drain: return once every call of this replica has ended."""
        while self.sessions or self._pending:
            if self.sessions:
                await self._idle.wait()
            else:
                await asyncio.sleep(0.05)

    # -- from the edge ---------------------------------------------------------------------

    def handle_invite(self, transaction: ServerTransaction, request: SipRequest) -> None:
        if request.call_id in self._by_call_id and isinstance(
            self._by_call_id[request.call_id], UacLeg
        ):
            # A leg we placed came back to us: the call would loop forever.
            self.endpoint.reject(transaction, 482, "Loop Detected")
            return
        if self.draining:
            self.endpoint.reject(
                transaction, 503, None, [("Retry-After", str(RETRY_AFTER_SECONDS))]
            )
            return
        task = asyncio.ensure_future(self._admit(transaction, request))
        self._pending[transaction.key] = task
        task.add_done_callback(lambda _t: self._pending.pop(transaction.key, None))

    async def _admit(self, transaction: ServerTransaction, request: SipRequest) -> None:
        try:
            await self._admit_call(transaction, request)
        except asyncio.CancelledError:
            raise
        except DirectoryUnavailable as exc:
            self.log.warning("invite_directory_unavailable", error=str(exc))
            self.endpoint.reject(
                transaction, 503, None, [("Retry-After", str(RETRY_AFTER_SECONDS))]
            )
        except SipParseError as error:
            self.endpoint.reject(transaction, error.status_code, error.reason)
        except Exception:
            self.log.exception("invite_failed", sip_call_id=request.call_id)
            self.endpoint.reject(
                transaction, 500, None, [("Retry-After", str(RETRY_AFTER_SECONDS))]
            )

    async def _admit_call(self, transaction: ServerTransaction, request: SipRequest) -> None:
        source = transaction.destination
        now = self._wall_clock()
        if self.abuse.source_banned(source.host, now):
            self.endpoint.reject(transaction, 403)
            return
        from_uri = request.from_.uri
        callee = (request.uri.user if isinstance(request.uri, SipUri) else None) or ""
        header = request.get("proxy-authorization")
        if header is None:
            trunk = await self.trunks.by_source(source.host)
            if trunk is not None:
                if not callee:
                    self.endpoint.reject(
                        transaction, 404, "Not Found - no number in the Request-URI"
                    )
                    return
                await self._start_trunk_call(transaction, request, trunk, callee)
                return
        # The caller's tenant is the one whose SIP domain is the From host; everyone who is
        # not a trunk is challenged the same way, so nothing can be learnt without a password.
        request_host = request.uri.host if isinstance(request.uri, SipUri) else ""
        domain = (from_uri.host if isinstance(from_uri, SipUri) else request_host).lower()
        tenant = await self.directory.tenant_by_domain(domain)
        realm = tenant.sip_domain if tenant is not None else domain
        authenticator = self.registrar.authenticator(realm, remember=tenant is not None)
        credentials: DigestCredentials | None = None
        if header is not None:
            try:
                credentials = parse_credentials(header)
            except DigestError:
                credentials = None
        if credentials is None or credentials.realm != realm:
            self._challenge(transaction, authenticator.challenge_headers(now))
            return
        account = ((tenant.tenant_id if tenant is not None else domain), credentials.username)
        if self.abuse.account_locked(account, now):
            self.abuse.auth_failed(source.host, None, now)
            self.endpoint.reject(transaction, 403)
            return
        user = None
        if tenant is not None and tenant.enabled:
            user = await self.directory.user(tenant.tenant_id, credentials.username)
        ha1 = user.ha1(credentials.algorithm) if user is not None and user.enabled else None
        result = authenticator.verify(credentials, method="INVITE", ha1=ha1, now=now)
        if result.outcome is AuthOutcome.STALE:
            self._challenge(transaction, authenticator.challenge_headers(now, stale=True))
            return
        if not result.ok or tenant is None or user is None:
            self.abuse.auth_failed(source.host, account, now)
            self.log.info(
                "invite_auth_failed", source=f"{source.host}:{source.port}", reason=result.reason
            )
            self.endpoint.reject(transaction, 403)
            return
        if not callee:
            self.endpoint.reject(transaction, 404, "Not Found - no number in the Request-URI")
            return
        internal = await self.directory.user(tenant.tenant_id, callee) is not None
        context = self._context(
            request,
            transaction,
            tenant_id=tenant.tenant_id,
            direction=Direction.CALL_DIRECTION_INTERNAL
            if internal
            else Direction.CALL_DIRECTION_OUTBOUND,
            caller_number=user.extension,
            callee=callee,
        )
        context.caller_user_id = user.user_id
        context.caller_extension = user.extension
        # Inside the tenant the caller is their extension, whatever the phone put in From.
        self._start_session(
            transaction, context, from_user=user.extension, caller_domain=tenant.sip_domain
        )

    def _challenge(self, transaction: ServerTransaction, challenges: list[str]) -> None:
        self.endpoint.reject(
            transaction, 407, None, [("Proxy-Authenticate", v) for v in challenges]
        )

    async def _start_trunk_call(
        self, transaction: ServerTransaction, request: SipRequest, trunk: TrunkEntry, callee: str
    ) -> None:
        from_uri = request.from_.uri
        caller = from_uri.user if isinstance(from_uri, SipUri) and from_uri.user else ""
        asserted = request.get("p-asserted-identity")
        if asserted:
            try:
                from ..sip.headers import parse_name_addr

                asserted_uri = parse_name_addr(asserted).uri
                if isinstance(asserted_uri, SipUri) and asserted_uri.user:
                    caller = asserted_uri.user
            except SipParseError:
                pass
        # Load the tenant list (cached) so the tenant's SIP domain is known for To headers.
        await self.directory.tenant_by_domain("")
        context = self._context(
            request,
            transaction,
            tenant_id=trunk.tenant_id,
            direction=Direction.CALL_DIRECTION_INBOUND,
            caller_number=caller,
            callee=callee,
        )
        context.trunk_id = trunk.trunk_id
        context.did = callee
        self._start_session(
            transaction,
            context,
            from_user=caller,
            caller_domain=self.directory.domain_of(trunk.tenant_id) or self.host,
        )

    def _context(
        self,
        request: SipRequest,
        transaction: ServerTransaction,
        *,
        tenant_id: str,
        direction: Direction.ValueType,
        caller_number: str,
        callee: str,
    ) -> routing_pb2.CallContext:
        source = transaction.destination
        privacy = (request.get("privacy") or "").lower()
        context = routing_pb2.CallContext(
            call_id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            direction=direction,
            caller_number=caller_number,
            caller_name=request.from_.display_name or "",
            caller_withheld="id" in privacy or "user" in privacy,
            callee_number=callee,
            sip_call_id=request.call_id,
            source_address=f"{source.host}:{source.port}",
        )
        context.started_at.FromNanoseconds(round(self._wall_clock() * 1e9))
        return context

    def _start_session(
        self,
        transaction: ServerTransaction,
        context: routing_pb2.CallContext,
        *,
        from_user: str,
        caller_domain: str,
    ) -> None:
        last = transaction.last_response
        if transaction.terminated or (last is not None and last.status_code >= 200):
            return  # cancelled (487 sent) while we were authenticating
        session = CallSession(
            services=self,
            context=context,
            transaction=transaction,
            local_tag=new_tag(),
            events=CallEventLog(
                self.events,
                call_id=context.call_id,
                tenant_id=context.tenant_id,
                producer=self.replica,
                wall_clock=self._wall_clock,
            ),
            from_user=from_user,
            from_name=context.caller_name,
            caller_domain=caller_domain,
            verbs=self.verbs,
        )
        self.sessions[context.call_id] = session
        self._idle.clear()
        self.calls_started += 1
        self.log.info(
            "call_started",
            call_id=context.call_id,
            sip_call_id=context.sip_call_id,
            tenant_id=context.tenant_id,
            caller=context.caller_number,
            callee=context.callee_number,
            direction=common_pb2.CallDirection.Name(context.direction),
        )
        session.start()

    def handle_cancel(self, transaction: ServerTransaction, request: SipRequest) -> None:
        invite = self.endpoint.layer.find_invite_for_cancel(request)
        if invite is None:
            self.endpoint.reject(transaction, 481)
            return
        self.send_response(transaction, build_response(request, 200))
        leg = self._by_server.get(invite.key)
        if leg is not None:
            leg.on_cancel()
            return
        pending = self._pending.get(invite.key)
        if pending is not None:
            pending.cancel()
        # Not a call (yet): still authenticating or asking for the trunk.
        self.endpoint.reject(invite, 487)

    def handle_in_dialog(self, transaction: ServerTransaction, request: SipRequest) -> None:
        leg = self._by_dialog.get((request.call_id, request.to.tag or ""))
        if leg is None:
            self.endpoint.reject(transaction, 481)
            return
        leg.on_request(transaction, request)

    def handle_event(self, event: TransactionEvent) -> None:
        if isinstance(event, ResponseReceived):
            leg = self._by_client.get(event.transaction.key)
            if leg is not None:
                leg.on_response(event.transaction, event.response)
        elif isinstance(event, AckReceived):
            self._ack(event)
        elif isinstance(event, TransactionTimeout):
            transaction = event.transaction
            if isinstance(transaction, ClientTransaction):
                owner = self._by_client.get(transaction.key)
                if owner is not None:
                    owner.on_client_timeout(transaction, event.reason)
            else:
                uas = self._by_server.get(transaction.key)
                if uas is not None:
                    uas.on_server_timeout(transaction, event.reason)
        elif isinstance(event, StrayResponse):
            response = event.response
            if response.cseq.method == "INVITE" and 200 <= response.status_code < 300:
                found = self._by_call_id.get(response.call_id)
                if isinstance(found, UacLeg):
                    found.on_stray_2xx(response)

    def _ack(self, event: AckReceived) -> None:
        leg: Leg | None = None
        if event.transaction is not None:
            leg = self._by_server.get(event.transaction.key)
        if leg is None:
            # No transaction matched: match the dialog by Call-ID, From tag and CSeq
            # (pyVoIP's ACK carries a new To tag and the INVITE's branch).
            candidate = self._by_call_id.get(event.request.call_id)
            if (
                isinstance(candidate, UasLeg)
                and candidate.dialog is not None
                and candidate.dialog.matches_ack(event.request)
            ):
                leg = candidate
        if isinstance(leg, UasLeg):
            leg.on_ack(event.request)
