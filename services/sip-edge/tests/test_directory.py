"""The directory against the api's real Provisioning server: caching, invalidation, isolation."""

from __future__ import annotations

import hashlib

import grpc
from callmesh.events.v1 import config_pb2
from callmesh.provisioning.v1 import provisioning_pb2 as pb
from callmesh_sip_edge.directory import Directory, DirectoryUnavailable
from callmesh_sip_edge.sip.digest import DigestAlgorithm

from .conftest import Provisioned


async def test_cached_until_a_config_event_then_reread(provisioning: Provisioned) -> None:
    acme = provisioning.accounts["acme102"]
    async with grpc.aio.insecure_channel(provisioning.address) as channel:
        directory = Directory(channel, timeout=2.0)
        tenant = await directory.tenant_by_domain(acme.domain.upper())
        assert tenant is not None and tenant.tenant_id == acme.tenant_id
        user = await directory.user(acme.tenant_id, "102")
        assert user is not None and user.user_id == acme.user_id
        calls = directory.rpc_count
        assert await directory.user(acme.tenant_id, "102") == user
        assert directory.rpc_count == calls  # served from memory
        # A new password in the api: the cache keeps the old HA1 until the event arrives.
        material = f"102:{acme.domain}:changed-password".encode()
        await provisioning.stub.UpsertUser(
            pb.UpsertUserRequest(
                user=pb.User(
                    tenant_id=acme.tenant_id,
                    extension="102",
                    name="acme102",
                    sip_credentials=pb.DigestCredentials(
                        ha1_md5=hashlib.md5(material).hexdigest(),
                        ha1_sha256=hashlib.sha256(material).hexdigest(),
                    ),
                    enabled=True,
                )
            )
        )
        assert await directory.user(acme.tenant_id, "102") == user
        directory.invalidate(
            config_pb2.ConfigChanged(
                tenant_id=acme.tenant_id, kind=config_pb2.CONFIG_KIND_USER, id=acme.user_id
            )
        )
        fresh = await directory.user(acme.tenant_id, "102")
        assert fresh is not None
        assert fresh.ha1(DigestAlgorithm.MD5) == hashlib.md5(material).hexdigest()
        assert fresh.version > user.version
        # Put the original password back for the other tests of this module.
        original = f"102:{acme.domain}:{acme.password}".encode()
        await provisioning.stub.UpsertUser(
            pb.UpsertUserRequest(
                user=pb.User(
                    tenant_id=acme.tenant_id,
                    extension="102",
                    name="acme102",
                    sip_credentials=pb.DigestCredentials(
                        ha1_md5=hashlib.md5(original).hexdigest(),
                        ha1_sha256=hashlib.sha256(original).hexdigest(),
                    ),
                    enabled=True,
                )
            )
        )


async def test_same_extension_in_two_tenants_and_unknowns(provisioning: Provisioned) -> None:
    acme, globex = provisioning.accounts["acme101"], provisioning.accounts["globex101"]
    async with grpc.aio.insecure_channel(provisioning.address) as channel:
        directory = Directory(channel, timeout=2.0)
        a = await directory.user(acme.tenant_id, "101")
        g = await directory.user(globex.tenant_id, "101")
        assert a is not None and g is not None
        assert a.user_id == acme.user_id and g.user_id == globex.user_id
        assert a.ha1_md5 != g.ha1_md5 and a.realm == acme.domain and g.realm == globex.domain
        assert await directory.user(acme.tenant_id, "999") is None
        calls = directory.rpc_count
        assert await directory.user(acme.tenant_id, "999") is None
        assert directory.rpc_count == calls  # absence is cached briefly too
        assert await directory.tenant_by_domain("nowhere.invalid") is None


async def test_unreachable_provisioning_is_reported_not_hung() -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:9") as channel:
        directory = Directory(channel, timeout=0.3)
        try:
            await directory.tenant_by_domain("acme.test")
        except DirectoryUnavailable as exc:
            assert "ListTenants" in str(exc)
        else:
            raise AssertionError("expected DirectoryUnavailable")
