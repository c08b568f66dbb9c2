"""The registrar over real sockets: sipp (MD5), sipsak (SHA-256), replay, lockout, isolation.

Everything is real: the edge's UDP/TCP listeners, its PostgreSQL location store, the presence
outbox relayed to Kafka, and the api's own `Provisioning` server (conftest.py).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from callmesh.events.v1 import presence_pb2
from callmesh_sip_edge.sip.digest import DigestAlgorithm
from callmesh_sip_edge.sip.message import SipResponse, new_tag
from callmesh_sip_edge.sip.parser import parse_message

from .conftest import Account, Provisioned, RunningEdge, SipClient, free_udp_tcp_port

SIPP_DIR = Path(__file__).resolve().parent / "sipp"


def _shape(response: SipResponse) -> tuple[int, str, list[str]]:
    """What may differ between two answers only by chance is left out (tags, branches)."""
    return response.status_code, response.reason, [name for name, _ in response.headers]


async def _bindings(edge: RunningEdge, account: Account) -> list[str]:
    found = await edge.runtime.location.lookup(account.tenant_id, account.extension)
    return sorted(binding.contact_uri for binding in found)


async def _run(argv: list[str], deadline: float) -> subprocess.CompletedProcess[bytes]:
    """Run a SIP tool with a deadline; it is killed in any case."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), deadline)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


async def test_register_md5_then_refresh_query_and_unregister(
    edge: RunningEdge, provisioning: Provisioned
) -> None:
    account = provisioning.accounts["acme101"]
    async with SipClient(edge.port) as client:
        challenge, ok, _ = await client.register(account)
        algorithms = [
            v.split("algorithm=")[1].split(",")[0] for v in challenge.get_all("www-authenticate")
        ]
        assert algorithms == ["SHA-256", "MD5"]
        assert all('qop="auth"' in v for v in challenge.get_all("www-authenticate"))
        assert ok.status_code == 200, ok
        contact = f"sip:101@127.0.0.1:{client.local_port}"
        assert ok.get_all("contact") and contact in ok.get_all("contact")[0]
        assert await _bindings(edge, account) == [contact]
        # Un-register this contact (Expires: 0).
        _, gone, _ = await client.register(account, expires=0)
        assert gone.status_code == 200 and not gone.has("contact")
        assert await _bindings(edge, account) == []


async def test_sipp_registers_with_md5_digest(
    edge: RunningEdge, md5_first_edge: RunningEdge, provisioning: Provisioned, tmp_path: Path
) -> None:
    """sipp 3.6 answers only the first challenge, so it registers through a second replica
    offering MD5 first; the first replica then finds the contact through PostgreSQL."""
    if shutil.which("sipp") is None:
        pytest.skip("sipp (Debian sip-tester) is not installed")
    account = provisioning.accounts["acme102"]
    local_port = free_udp_tcp_port()
    result = await _run(
        [
            "sipp",
            f"127.0.0.1:{md5_first_edge.port}",
            "-sf",
            str(SIPP_DIR / "register_md5.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(local_port),
            "-s",
            account.extension,
            "-au",
            account.extension,
            "-ap",
            account.password,
            "-key",
            "domain",
            account.domain,
            "-m",
            "1",
            "-timeout",
            "15s",
            "-timeout_error",
            "-nostdin",
            "-bg" if False else "-trace_err",
            "-error_file",
            str(tmp_path / "sipp_errors.log"),
        ],
        deadline=30,
    )
    errors = (
        (tmp_path / "sipp_errors.log").read_text()
        if (tmp_path / "sipp_errors.log").exists()
        else ""
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:], errors[-2000:])
    assert await _bindings(edge, account) == [f"sip:102@127.0.0.1:{local_port}"]


async def test_sipsak_registers_through_the_md5_first_replica(
    md5_first_edge: RunningEdge, provisioning: Provisioned
) -> None:
    """Debian's sipsak 0.9.8.1 is built with GnuTLS, not OpenSSL, and so has MD5 digest only
    ("unsupported authentication algorithm" for SHA-256); it also answers only the first
    challenge. SHA-256 is shown with the core's own client in the next test."""
    if shutil.which("sipsak") is None:
        pytest.skip("sipsak is not installed")
    account = provisioning.accounts["local201"]
    local_port = free_udp_tcp_port()
    contact = f"sip:201@127.0.0.1:{local_port}"
    result = await _run(
        [
            "sipsak", "-U", "-C", contact, "-x", "300",
            "-s", f"sip:{account.extension}@{account.domain}",
            "-p", "127.0.0.1", "-r", str(md5_first_edge.port),
            "-l", str(local_port), "-H", "127.0.0.1",
            "-a", account.password, "-u", account.extension, "-vvv",
        ],
        deadline=30,
    )  # fmt: skip
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output[-3000:] + result.stderr.decode(errors="replace")
    assert "algorithm=MD5" in output and "200 OK" in output
    assert contact in await _bindings(md5_first_edge, account)


async def test_register_with_sha256_digest(edge: RunningEdge, provisioning: Provisioned) -> None:
    account = provisioning.accounts["local201"]
    async with SipClient(edge.port, local_host="127.0.0.9", tcp=True) as client:
        _, ok, header = await client.register(account, algorithm=DigestAlgorithm.SHA256)
        assert "algorithm=SHA-256" in header and "qop=auth" in header.replace('"', "")
        assert ok.status_code == 200, ok
        assert f"sip:201@127.0.0.9:{client.local_port}" in await _bindings(edge, account)
        _, removed, _ = await client.register(
            account, algorithm=DigestAlgorithm.SHA256, contact="*", expires=0
        )
        assert removed.status_code == 200
        assert await _bindings(edge, account) == []


async def test_wrong_password_and_unknown_user_get_identical_answers(
    edge: RunningEdge, provisioning: Provisioned
) -> None:
    account = provisioning.accounts["acme104"]
    ghost = Account(account.tenant_id, account.domain, "199", "whatever", "")
    async with SipClient(edge.port, local_host="127.0.0.2") as client:
        _, wrong, _ = await client.register(account, password="not-the-password")
        _, unknown, _ = await client.register(ghost)
        _, unknown_sha, _ = await client.register(ghost, algorithm=DigestAlgorithm.SHA256)
    assert wrong.status_code == 403
    assert _shape(wrong) == _shape(unknown) == _shape(unknown_sha)
    assert await _bindings(edge, account) == []


async def test_a_replayed_authorization_is_rejected_with_any_contact(
    edge: RunningEdge, provisioning: Provisioned
) -> None:
    account = provisioning.accounts["acme104"]
    async with SipClient(edge.port, local_host="127.0.0.3") as client:
        _, ok, captured = await client.register(account)
        assert ok.status_code == 200
        mine = f"sip:104@127.0.0.3:{client.local_port}"
        # The attacker re-sends the captured header: as it was, and pointing elsewhere.
        for contact in (None, "<sip:104@203.0.113.66:5060>"):
            client.send_raw(
                client.register_request(account, contact=contact, authorization=captured)
            )
            replayed = await client.response()
            assert replayed.status_code == 403, replayed
        assert await _bindings(edge, account) == [mine]
        client.send_raw(client.register_request(account, contact="*", expires=0))
        challenge = await client.response()
        assert challenge.status_code == 401


async def test_several_contacts_star_removal_and_interval_too_brief(
    edge: RunningEdge, provisioning: Provisioned
) -> None:
    account = provisioning.accounts["acme101"]
    async with (
        SipClient(edge.port, local_host="127.0.0.4") as phone,
        SipClient(edge.port, local_host="127.0.0.5", tcp=True) as softphone,
    ):
        _, first, _ = await phone.register(account)
        _, second, _ = await softphone.register(account, expires=90)
        assert first.status_code == second.status_code == 200
        assert len(second.get_all("contact")) == 2
        assert await _bindings(edge, account) == sorted(
            [f"sip:101@127.0.0.4:{phone.local_port}", f"sip:101@127.0.0.5:{softphone.local_port}"]
        )
        _, brief, _ = await phone.register(account, expires=1)
        assert brief.status_code == 423 and brief.get("min-expires") == "2"
        _, removed, _ = await phone.register(account, contact="*", expires=0)
        assert removed.status_code == 200
        assert await _bindings(edge, account) == []


async def test_contacts_expire_and_presence_events_reach_kafka(
    edge: RunningEdge, provisioning: Provisioned, kafka_bootstrap: str
) -> None:
    account = provisioning.accounts["acme102"]
    consumer = AIOKafkaConsumer(
        "callmesh.presence.v1",
        bootstrap_servers=kafka_bootstrap,
        group_id=f"t-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
    )
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=1000)  # joins the group and gets its partitions
        await consumer.seek_to_end()
        async with SipClient(edge.port, local_host="127.0.0.6") as client:
            contact = f"sip:102@127.0.0.6:{client.local_port}"
            _, ok, _ = await client.register(account, expires=2)
            assert ok.status_code == 200
            assert contact in await _bindings(edge, account)
        kinds: list[str] = []
        deadline = time.monotonic() + 15
        key = f"{account.tenant_id}/102".encode()
        while "expired" not in kinds and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.key != key or record.value is None:
                        continue
                    event = presence_pb2.PresenceEvent.FromString(record.value)
                    kind = event.WhichOneof("kind")
                    assert kind is not None
                    if (
                        kind in ("registered", "expired")
                        and getattr(event, kind).contact_uri == contact
                    ):
                        kinds.append(kind)
                        assert event.tenant_id == account.tenant_id
                        assert event.user_id == account.user_id
        assert kinds == ["registered", "expired"]
        assert contact not in await _bindings(edge, account)
    finally:
        await consumer.stop()


async def test_the_same_extension_in_two_tenants_stays_separate(
    edge: RunningEdge, provisioning: Provisioned
) -> None:
    acme, globex = provisioning.accounts["acme101"], provisioning.accounts["globex101"]
    assert acme.extension == globex.extension == "101"
    async with (
        SipClient(edge.port, local_host="127.0.0.7") as a,
        SipClient(edge.port, local_host="127.0.0.8") as g,
    ):
        _, ok_a, _ = await a.register(acme)
        _, ok_g, _ = await g.register(globex)
        assert ok_a.status_code == ok_g.status_code == 200
        # acme's password does not open globex's 101, and vice versa.
        crossed = Account(globex.tenant_id, globex.domain, "101", acme.password, "")
        _, refused, _ = await a.register(crossed)
        assert refused.status_code == 403
        assert await _bindings(edge, acme) == [f"sip:101@127.0.0.7:{a.local_port}"]
        assert await _bindings(edge, globex) == [f"sip:101@127.0.0.8:{g.local_port}"]
        await a.register(acme, expires=0)
        await g.register(globex, expires=0)


async def test_lockout_stops_a_brute_force_from_many_addresses(
    edge: RunningEdge, provisioning: Provisioned
) -> None:
    """Guesses spread over 15 addresses (1 each: no address is banned) lock the account."""
    account = provisioning.accounts["acme103"]
    threshold = edge.runtime.registrar.abuse.settings.account_failures
    answers: list[int] = []
    for index in range(threshold + 5):
        async with SipClient(edge.port, local_host=f"127.0.1.{10 + index}") as bot:
            _, answer, _ = await bot.register(account, password=f"guess-{index}")
            answers.append(answer.status_code)
    assert answers == [403] * len(answers)
    assert edge.runtime.registrar.abuse.account_locked((account.tenant_id, "103"), time.time())
    # Locked: now even the right password is refused, from a fresh address.
    async with SipClient(edge.port, local_host="127.0.1.200") as owner:
        _, refused, _ = await owner.register(account)
    assert refused.status_code == 403
    assert edge.runtime.registrar.counters.rejected_locked >= 1
    # Other accounts of the tenant are unaffected.
    async with SipClient(edge.port, local_host="127.0.1.201") as other:
        _, fine, _ = await other.register(provisioning.accounts["acme104"], expires=0)
    assert fine.status_code == 200


async def test_options_keepalive_and_malformed_over_tcp(edge: RunningEdge) -> None:
    async with SipClient(edge.port, tcp=True) as client:
        client.send_raw(b"\r\n\r\n")
        assert client._reader is not None
        pong = await asyncio.wait_for(client._reader.readexactly(2), 5)
        assert pong == b"\r\n"
        options = (
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{client.local_port};branch=z9hG4bK{new_tag()}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=1\r\n"
            "To: <sip:127.0.0.1>\r\nCall-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        client.send_raw(options.encode())
        answer = await client.response()
        assert answer.status_code == 200 and "REGISTER" in (answer.get("allow") or "")
        # A request without Content-Length on a stream: 400 naming it, then the edge hangs up.
        client.send_raw(
            options.replace("Content-Length: 0\r\n", "").replace("opt-1", "opt-2").encode()
        )
        bad = parse_message(await client.receive(), stream=True)
        assert isinstance(bad, SipResponse)
        assert bad.status_code == 400 and "Content-Length" in bad.reason
    # Still serving; over UDP without rport the answer goes to the Via's port (RFC 3261
    # 18.2.2), with rport to where the request came from (RFC 3581).
    async with SipClient(edge.port) as udp:
        for rport in ("", ";rport"):
            via_port = udp.local_port if not rport else 9
            udp.send_raw(
                options.replace(f"TCP 127.0.0.1:{client.local_port}", f"UDP 127.0.0.1:{via_port}")
                .replace(";branch=", f"{rport};branch=")
                .replace("opt-1", f"opt-3-{len(rport)}")
                .encode()
            )
            answer = await udp.response()
            assert answer.status_code == 200
            if rport:
                assert f"rport={udp.local_port}" in (answer.get("via") or "")
