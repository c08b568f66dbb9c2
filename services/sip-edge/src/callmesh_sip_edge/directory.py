"""Tenants and users as the edge needs them, read over `Provisioning` gRPC and cached.

The api is the configuration of record (ARCHITECTURE §2); the edge never reads its tables. It
asks `ListTenants` (to map a SIP domain to its tenant; a tenant's `sip_domain` is also its
digest realm) and `GetUserByExtension` (for the HA1 values), with a deadline on every call, and
keeps the answers in memory. `callmesh.config.v1` ConfigChanged events drop what they make
stale (:meth:`Directory.handle_config_event`); a time-to-live bounds how long a missed event can
leave a stale entry.

Lookups are keyed by (tenant id, extension), never by extension alone: the same extension in
two tenants is two different users.

Unknown domains and extensions are cached as absent too, for a short while, so that a flood of
REGISTERs for made-up users cannot turn into a flood of RPCs against the api.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from callmesh.events.v1 import config_pb2
from callmesh.provisioning.v1 import provisioning_pb2 as pb
from callmesh.provisioning.v1 import provisioning_pb2_grpc
from callmesh_core.kafka import ConsumedEvent

from .sip.digest import DigestAlgorithm


class DirectoryUnavailable(Exception):
    """Provisioning did not answer in time (or at all): the request gets a 503."""


@dataclass(frozen=True, slots=True)
class TenantEntry:
    tenant_id: str
    slug: str
    sip_domain: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class UserEntry:
    tenant_id: str
    user_id: str
    extension: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    enabled: bool
    max_contacts: int
    version: int

    def ha1(self, algorithm: DigestAlgorithm) -> str | None:
        value = self.ha1_sha256 if algorithm is DigestAlgorithm.SHA256 else self.ha1_md5
        return value or None


@dataclass(slots=True)
class _CachedUser:
    value: UserEntry | None
    fetched_at: float


class Directory:
    """Cached reads of `Provisioning`; one per replica."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout: float = 2.0,
        ttl: float = 300.0,
        negative_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = provisioning_pb2_grpc.ProvisioningStub(channel)
        self._timeout = timeout
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._clock = clock
        self._domains: dict[str, TenantEntry] = {}
        self._domains_fetched_at: float | None = None
        self._users: dict[tuple[str, str], _CachedUser] = {}
        self.rpc_count = 0

    # -- tenants ---------------------------------------------------------------------------

    async def tenant_by_domain(self, domain: str) -> TenantEntry | None:
        """The tenant whose SIP domain is ``domain`` (case-insensitive), or None."""
        key = domain.lower()
        now = self._clock()
        fetched = self._domains_fetched_at
        entry = self._domains.get(key)
        # A miss re-lists at most once per negative_ttl: unknown domains stay cheap.
        if (
            fetched is not None
            and now - fetched < self._ttl
            and (entry is not None or now - fetched < self._negative_ttl)
        ):
            return entry
        await self._load_tenants()
        return self._domains.get(key)

    def domain_of(self, tenant_id: str) -> str | None:
        """The SIP domain of a tenant already in the cache (None when not loaded)."""
        for entry in self._domains.values():
            if entry.tenant_id == tenant_id:
                return entry.sip_domain
        return None

    async def _load_tenants(self) -> None:
        domains: dict[str, TenantEntry] = {}
        token = ""
        try:
            while True:
                self.rpc_count += 1
                reply = await self._stub.ListTenants(
                    pb.ListTenantsRequest(page_size=500, page_token=token), timeout=self._timeout
                )
                for tenant in reply.tenants:
                    domains[tenant.sip_domain.lower()] = TenantEntry(
                        tenant_id=tenant.tenant_id,
                        slug=tenant.slug,
                        sip_domain=tenant.sip_domain,
                        enabled=tenant.enabled,
                    )
                token = reply.next_page_token
                if not token:
                    break
        except grpc.aio.AioRpcError as exc:
            raise DirectoryUnavailable(f"ListTenants: {exc.code().name}") from exc
        self._domains = domains
        self._domains_fetched_at = self._clock()

    # -- users -----------------------------------------------------------------------------

    async def user(self, tenant_id: str, extension: str) -> UserEntry | None:
        """The user with ``extension`` in ``tenant_id``, or None."""
        key = (tenant_id, extension)
        now = self._clock()
        cached = self._users.get(key)
        if cached is not None:
            ttl = self._ttl if cached.value is not None else self._negative_ttl
            if now - cached.fetched_at < ttl:
                return cached.value
        try:
            self.rpc_count += 1
            found = await self._stub.GetUserByExtension(
                pb.GetUserByExtensionRequest(tenant_id=tenant_id, extension=extension),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                self._users[key] = _CachedUser(None, self._clock())
                return None
            raise DirectoryUnavailable(f"GetUserByExtension: {exc.code().name}") from exc
        credentials = found.sip_credentials
        entry = UserEntry(
            tenant_id=found.tenant_id,
            user_id=found.user_id,
            extension=found.extension,
            realm=credentials.realm,
            ha1_md5=credentials.ha1_md5,
            ha1_sha256=credentials.ha1_sha256,
            enabled=found.enabled,
            max_contacts=found.max_contacts,
            version=found.version,
        )
        if entry.tenant_id != tenant_id or entry.extension != extension:
            # Never let an answer for another tenant into this tenant's cache slot.
            raise DirectoryUnavailable("GetUserByExtension answered for another user")
        self._users[key] = _CachedUser(entry, self._clock())
        return entry

    # -- invalidation ----------------------------------------------------------------------

    def invalidate(self, event: config_pb2.ConfigChanged) -> None:
        if event.kind == config_pb2.CONFIG_KIND_TENANT:
            # Domain, realm or enabled flag may have changed: re-list, and the realm is part
            # of every user's HA1, so the tenant's users go too.
            self._domains_fetched_at = None
            self._drop_users(event.tenant_id)
        elif event.kind == config_pb2.CONFIG_KIND_USER:
            # Keyed by extension, and the event names the user id; an extension may also have
            # moved between users, or a new user may fill a slot cached as absent.
            self._drop_users(event.tenant_id)

    def _drop_users(self, tenant_id: str) -> None:
        for key in [key for key in self._users if key[0] == tenant_id]:
            del self._users[key]

    async def handle_config_event(self, event: ConsumedEvent[config_pb2.ConfigChanged]) -> None:
        """Kafka handler for `callmesh.config.v1` (idempotent: dropping twice is harmless)."""
        self.invalidate(event.message)

    @property
    def cached_users(self) -> int:
        return len(self._users)
