"""The transaction user of the edge: dispatches requests to the registrar, OPTIONS and calls.

:class:`SipEdge` receives every :class:`~.sip.transaction.TransactionEvent` from the endpoint.
Requests are checked by the core (``check_request``: 405, 415, 416, 420, 483, 501, ...), then

- OPTIONS is answered here (200 with Allow/Accept/Supported; also at Max-Forwards 0),
- REGISTER goes to :class:`RegistrarService` (an asyncio task per request: it waits for the
  directory and PostgreSQL),
- INVITE goes to the call handler (the B2BUA, part of issue 3 item 4) unless the replica is
  draining, in which case it gets 503 with Retry-After,
- anything in-dialog or for a transaction this replica does not know gets 481.

Registrar flow (RFC 3261 10.3 with RFC 7616/8760 digest):
rate limit and bans per source -> tenant by the To host (its SIP domain is the realm) ->
challenge when there are no credentials (also for unknown domains, so domains cannot be probed)
-> account lockout -> HA1 from the directory -> verify (stale nonce: a new challenge with
stale=true; wrong password, unknown user and replayed nonce-count all get the same 403) ->
Contact/Expires plan (400, 423) -> location store (one transaction with the presence events)
-> 200 with every binding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from callmesh_core.logging import EventLogger

from .abuse import AbuseGuard
from .directory import Directory, DirectoryUnavailable, TenantEntry
from .location import LocationStore, RegistrationSource
from .registrar import ExpiryPolicy, build_register_ok, plan_register
from .sip.digest import (
    AuthOutcome,
    DigestAlgorithm,
    DigestAuthenticator,
    DigestCredentials,
    parse_credentials,
)
from .sip.errors import DigestError, SipParseError
from .sip.message import SipRequest, new_tag
from .sip.transaction import (
    RequestReceived,
    ServerTransaction,
    TransactionEvent,
)
from .sip.uri import SipUri
from .sip.validation import EDGE_EXTENSIONS, EDGE_METHODS, Rejection, check_request
from .transport import SipEndpoint

ALLOW = ", ".join(sorted(EDGE_METHODS))
SUPPORTED = ", ".join(sorted(EDGE_EXTENSIONS))
RETRY_AFTER_SECONDS = 5


class CallHandler(Protocol):
    """The B2BUA side (calls.manager.CallManager): INVITEs, CANCELs, dialogs, other events."""

    def handle_invite(self, transaction: ServerTransaction, request: SipRequest) -> None: ...

    def handle_cancel(self, transaction: ServerTransaction, request: SipRequest) -> None: ...

    def handle_in_dialog(self, transaction: ServerTransaction, request: SipRequest) -> None: ...

    def handle_event(self, event: TransactionEvent) -> None: ...


@dataclass
class EdgeCounters:
    registers_ok: int = 0
    auth_failures: int = 0
    rejected_by_rate: int = 0
    rejected_banned: int = 0
    rejected_locked: int = 0


class RegistrarService:
    """Authenticates REGISTERs and keeps the location store; see the module docstring."""

    def __init__(
        self,
        *,
        endpoint: SipEndpoint,
        directory: Directory,
        location: LocationStore,
        abuse: AbuseGuard,
        nonce_secret: bytes,
        policy: ExpiryPolicy,
        log: EventLogger,
        wall_clock: Callable[[], float],
        nonce_lifetime: float = 300.0,
        algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5),
    ) -> None:
        self.algorithms = algorithms
        self.endpoint = endpoint
        self.directory = directory
        self.location = location
        self.abuse = abuse
        self.policy = policy
        self.log = log
        self._secret = nonce_secret
        self._nonce_lifetime = nonce_lifetime
        self._wall_clock = wall_clock
        # One authenticator per realm (tenant SIP domain); it tracks nonce-counts.
        self._authenticators: dict[str, DigestAuthenticator] = {}
        self.counters = EdgeCounters()

    def authenticator(self, realm: str, *, remember: bool = True) -> DigestAuthenticator:
        found = self._authenticators.get(realm)
        if found is None:
            found = DigestAuthenticator(
                realm,
                self._secret,
                nonce_lifetime=self._nonce_lifetime,
                algorithms=self.algorithms,
            )
            if remember:
                self._authenticators[realm] = found
        return found

    # -- answers ---------------------------------------------------------------------------

    def _challenge(
        self, transaction: ServerTransaction, realm: str, *, stale: bool = False, known: bool
    ) -> None:
        now = self._wall_clock()
        authenticator = self.authenticator(realm, remember=known)
        headers = [
            ("WWW-Authenticate", v) for v in authenticator.challenge_headers(now, stale=stale)
        ]
        self.endpoint.reject(transaction, 401, None, headers)

    # -- the flow --------------------------------------------------------------------------

    async def handle(self, transaction: ServerTransaction, request: SipRequest) -> None:
        try:
            await self._handle(transaction, request)
        except DirectoryUnavailable as exc:
            self.log.warning("register_directory_unavailable", error=str(exc))
            self.endpoint.reject(
                transaction, 503, None, [("Retry-After", str(RETRY_AFTER_SECONDS))]
            )
        except SipParseError as error:
            self.endpoint.reject(transaction, error.status_code, error.reason)
        except Exception:
            self.log.exception("register_failed", call_id=request.call_id)
            self.endpoint.reject(
                transaction, 500, None, [("Retry-After", str(RETRY_AFTER_SECONDS))]
            )

    async def _handle(self, transaction: ServerTransaction, request: SipRequest) -> None:
        source = transaction.destination
        now = self._wall_clock()
        abuse = self.abuse
        if abuse.source_banned(source.host, now):
            self.counters.rejected_banned += 1
            self.endpoint.reject(transaction, 403)
            return
        if not abuse.allow_request(source.host, "REGISTER", now):
            self.counters.rejected_by_rate += 1
            self.endpoint.reject(
                transaction, 503, None, [("Retry-After", str(RETRY_AFTER_SECONDS))]
            )
            return
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri) or not to_uri.user:
            self.endpoint.reject(transaction, 400, "Bad Request - To has no user part")
            return
        domain = to_uri.host.lower()
        tenant = await self.directory.tenant_by_domain(domain)
        realm = tenant.sip_domain if tenant is not None else domain
        header = request.get("authorization")
        credentials: DigestCredentials | None = None
        if header is not None:
            try:
                credentials = parse_credentials(header)
            except DigestError:
                credentials = None  # unknown scheme or broken header: challenge (RFC 4475 3.3.7)
        if credentials is None or credentials.realm != realm:
            self._challenge(transaction, realm, known=tenant is not None)
            return
        account = ((tenant.tenant_id if tenant is not None else domain), credentials.username)
        if abuse.account_locked(account, now):
            self.counters.rejected_locked += 1
            abuse.auth_failed(source.host, None, now)
            self.endpoint.reject(transaction, 403)
            return
        user = None
        if tenant is not None and tenant.enabled:
            user = await self.directory.user(tenant.tenant_id, credentials.username)
        ha1 = user.ha1(credentials.algorithm) if user is not None and user.enabled else None
        authenticator = self.authenticator(realm, remember=tenant is not None)
        result = authenticator.verify(credentials, method="REGISTER", ha1=ha1, now=now)
        if result.outcome is AuthOutcome.STALE:
            self._challenge(transaction, realm, stale=True, known=True)
            return
        if not result.ok:
            # Unknown user, wrong password, replayed nonce-count: one answer for all.
            self.counters.auth_failures += 1
            abuse.auth_failed(source.host, account, now)
            self.log.info(
                "register_auth_failed",
                source=f"{source.host}:{source.port}",
                realm=realm,
                username=credentials.username,
                reason=result.reason,
            )
            self.endpoint.reject(transaction, 403)
            return
        assert tenant is not None and user is not None
        if credentials.username != to_uri.user:
            # A user registers only their own address of record.
            self.endpoint.reject(transaction, 403, "Forbidden - To is not the authenticated user")
            return
        await self._register(
            transaction, request, tenant, user.user_id, user.extension, user.max_contacts
        )

    async def _register(
        self,
        transaction: ServerTransaction,
        request: SipRequest,
        tenant: TenantEntry,
        user_id: str,
        extension: str,
        max_contacts: int,
    ) -> None:
        plan = plan_register(request, self.policy)
        if isinstance(plan, Rejection):
            self.endpoint.reject(transaction, plan.status_code, plan.reason, plan.headers)
            return
        source = transaction.destination
        if plan.query_only:
            bindings = [
                b.as_binding() for b in await self.location.lookup(tenant.tenant_id, extension)
            ]
        else:
            applied = await self.location.apply(
                tenant_id=tenant.tenant_id,
                extension=extension,
                user_id=user_id,
                plan=plan,
                source=RegistrationSource(
                    source.transport, source.host, source.port, request.get("user-agent") or ""
                ),
                max_contacts=max_contacts or self.policy.max_contacts,
            )
            bindings = [b.as_binding() for b in applied.bindings]
        self.counters.registers_ok += 1
        self.endpoint.respond(
            transaction,
            build_register_ok(request, bindings, self._wall_clock(), to_tag=new_tag()),
        )


class SipEdge:
    """Dispatches transaction events; see the module docstring."""

    def __init__(
        self,
        *,
        endpoint: SipEndpoint,
        registrar: RegistrarService,
        abuse: AbuseGuard,
        log: EventLogger,
        wall_clock: Callable[[], float],
    ) -> None:
        self.endpoint = endpoint
        self.registrar = registrar
        self.abuse = abuse
        self.log = log
        self._wall_clock = wall_clock
        self.draining = False
        self.call_handler: CallHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        endpoint.set_handler(self.handle)

    def handle(self, event: TransactionEvent) -> None:
        if isinstance(event, RequestReceived):
            self._request(event)
        elif self.call_handler is not None:
            # Responses, ACKs for 2xx, timeouts and stray responses belong to call legs.
            self.call_handler.handle_event(event)

    def _request(self, event: RequestReceived) -> None:
        transaction, request = event.transaction, event.request
        if event.merged_with is not None:
            self.endpoint.reject(transaction, 482)
            return
        rejection = check_request(request)
        if rejection is not None:
            self.endpoint.reject(
                transaction, rejection.status_code, rejection.reason, rejection.headers
            )
            return
        method = request.method
        if method == "OPTIONS":
            self.endpoint.reject(
                transaction,
                200,
                None,
                [("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", SUPPORTED)],
            )
            return
        if method == "REGISTER":
            self._spawn(self.registrar.handle(transaction, request))
            return
        if method == "INVITE" and request.to.tag is None:
            self._invite(transaction, request)
            return
        if self.call_handler is None:
            self.endpoint.reject(transaction, 481)
            return
        if method == "CANCEL":
            self.call_handler.handle_cancel(transaction, request)
            return
        # In-dialog requests (BYE, re-INVITE, UPDATE, INFO); 481 for dialogs not held here.
        self.call_handler.handle_in_dialog(transaction, request)

    def _invite(self, transaction: ServerTransaction, request: SipRequest) -> None:
        now = self._wall_clock()
        source = transaction.destination.host
        if self.draining:
            self.endpoint.reject(
                transaction, 503, None, [("Retry-After", str(RETRY_AFTER_SECONDS))]
            )
            return
        if not self.abuse.allow_request(source, "INVITE", now):
            self.endpoint.reject(
                transaction, 503, None, [("Retry-After", str(RETRY_AFTER_SECONDS))]
            )
            return
        if self.call_handler is None:
            self.endpoint.reject(
                transaction,
                503,
                "Service Unavailable - calls are not served yet",
                [("Retry-After", str(RETRY_AFTER_SECONDS))],
            )
            return
        self.call_handler.handle_invite(transaction, request)

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Wait for the in-flight registrar tasks (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
