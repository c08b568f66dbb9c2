"""Every RFC 4475 torture message sent to the running edge over UDP and over TCP.

The expected outcome of each file comes from the core's table (test_sip_rfc4475.TABLE): the
status code the parser or ``check_request`` produces, or "drop" (no answer). Rows the table
leaves to the transaction user (``edge_answer=None`` or ``layer="tu"``) get the edge's own
policy, derived from the request: REGISTER is challenged (401, also for unknown domains),
OPTIONS is answered 200, an in-dialog request for an unknown dialog gets 481, and a new INVITE
from an address that is no trunk is challenged for the caller's credentials (407). After all
of them the edge still answers an OPTIONS.

Over UDP the answers to requests without ``rport`` go to the Via's port (5060 by default), so
the test's socket is bound to port 5060 on an address of its own in 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import random
import socket

import pytest
from callmesh_sip_edge.sip.errors import SipParseError
from callmesh_sip_edge.sip.message import SipRequest
from callmesh_sip_edge.sip.parser import StreamFramer, parse_message
from callmesh_sip_edge.sip.transaction import server_key

from .conftest import RFC4475, RunningEdge
from .test_sip_rfc4475 import TABLE

# How the edge itself (not the core) answers requests that pass the generic checks.
INVITE_CHALLENGED = 407

# Over TCP a few files frame differently from a datagram (RFC 3261 18.3: the stream is cut
# by Content-Length, which is mandatory there). Each difference, and why:
TCP_OUTCOMES: dict[str, list[int | str]] = {
    # Content-Length promises more than was sent: the framer waits for the rest.
    "clerr": ["drop"],
    # Two requests back to back: both are framed and answered (REGISTER 401, INVITE 407, in
    # either order); the 5 octets of INVITE body past its Content-Length cannot be framed,
    # and without a Via there is nobody to answer, so the edge just hangs up.
    "dblreq": [401, INVITE_CHALLENGED],
    # No Content-Length at all: a stream cannot be framed (400 naming it, then hang up).
    "inv2543": [400],
    "ltgtruri": [400],
    # Its body runs past its Content-Length; the tail is not a message.
    "ncl": [400],
    # No empty line after the headers: still waiting for the end of the header block.
    "baddn": ["drop"],
}


def tu_answer(data: bytes) -> int:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    if message.method == "REGISTER":
        return 401
    if message.method == "OPTIONS":
        return 200
    if message.method == "INVITE" and message.to.tag is None:
        return INVITE_CHALLENGED
    return 481


def udp_outcome(name: str, data: bytes) -> int | str:
    expected = TABLE[name]
    if expected.edge_answer is not None and expected.layer != "tu":
        return expected.edge_answer
    return tu_answer(data)


def _final_status(data: bytes) -> int | None:
    """The status of a final response, read from its status line only: an answer to a
    malformed request echoes the malformed From/To, so the whole answer may not parse."""
    first = data.split(b"\r\n", 1)[0].split(b" ")
    if len(first) < 2 or first[0] != b"SIP/2.0" or not first[1].isdigit():
        return None
    status = int(first[1])
    return status if status >= 200 else None


def _bind_5060() -> socket.socket:
    for _ in range(30):
        host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, 5060))
        except OSError:
            sock.close()
            continue
        sock.setblocking(False)
        return sock
    pytest.skip("no loopback address with a free port 5060")


async def _udp_answers(sock: socket.socket, port: int, data: bytes, want: int) -> list[int]:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, data, ("127.0.0.1", port))
    got: list[int] = []
    wait = 2.0 if want else 0.3
    while len(got) < max(want, 1):
        try:
            answer = await asyncio.wait_for(loop.sock_recv(sock, 65535), wait)
        except TimeoutError:
            break
        status = _final_status(answer)
        if status is not None:
            got.append(status)
    return got


class TransactionKeys:
    """When each server-transaction key was last used on the torture replica.

    Several files share a branch and sent-by (``z9hG4bKkdjuw`` ...), so one sent while an
    earlier file's transaction still lives is, per RFC 3261 17.2.3, that transaction's
    retransmission. Before sending such a file the test waits until the earlier transaction
    has been forgotten (64*T1 plus a margin on the fast-timer replica)."""

    linger = 64 * 0.02 + 0.5

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], float] = {}

    async def wait_for(self, data: bytes, stream: bool) -> None:
        frames = StreamFramer().feed(data).messages if stream else [data]
        keys = []
        for frame in frames:
            try:
                message = parse_message(frame, stream=stream)
                if isinstance(message, SipRequest):
                    keys.append(server_key(message))
            except SipParseError:
                continue
        loop = asyncio.get_running_loop()
        for key in keys:
            last = self._last.get(key)
            if last is not None:
                await asyncio.sleep(max(0.0, last + self.linger - loop.time()))
        for key in keys:
            self._last[key] = loop.time() + 2.0  # answers and retransmissions still to come


@pytest.fixture(scope="module")
def transaction_keys() -> TransactionKeys:
    return TransactionKeys()


async def test_every_torture_message_over_udp(
    torture_edge: RunningEdge, transaction_keys: TransactionKeys
) -> None:
    edge = torture_edge
    outcomes: dict[str, list[int | str]] = {}
    expected: dict[str, list[int | str]] = {}
    for path in sorted(RFC4475.glob("*.dat")):
        name, data = path.stem, path.read_bytes()
        outcome = udp_outcome(name, data)
        expected[name] = [outcome]
        # A socket (and address) per message: retransmissions of an earlier answer (a 407
        # to an INVITE repeats until ACKed) must not be taken for the next one's answer.
        await transaction_keys.wait_for(data, stream=False)
        sock = _bind_5060()
        try:
            got = await _udp_answers(sock, edge.port, data, 0 if outcome == "drop" else 1)
        finally:
            sock.close()
        outcomes[name] = list(got) if got else ["drop"]
    assert outcomes == expected
    assert len(outcomes) == 50
    await _still_serving(edge)


async def _tcp_answers(port: int, data: bytes, want: list[int | str]) -> list[int | str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framer = StreamFramer()
    got: list[int | str] = []
    try:
        writer.write(data)
        wanted = len([w for w in want if w != "drop"])
        wait = 2.0 if wanted else 0.3
        while len(got) < max(wanted, 1):
            try:
                chunk = await asyncio.wait_for(reader.read(65536), wait)
            except TimeoutError:
                break
            if not chunk:
                break
            for frame in framer.feed(chunk).messages:
                status = _final_status(frame)
                if status is not None:
                    got.append(status)
    finally:
        writer.close()
    return sorted(got) if got else ["drop"]


async def test_every_torture_message_over_tcp(
    torture_edge: RunningEdge, transaction_keys: TransactionKeys
) -> None:
    edge = torture_edge
    outcomes: dict[str, list[int | str]] = {}
    expected: dict[str, list[int | str]] = {}
    for path in sorted(RFC4475.glob("*.dat")):
        name, data = path.stem, path.read_bytes()
        want = sorted(TCP_OUTCOMES.get(name) or [udp_outcome(name, data)], key=str)
        expected[name] = want
        await transaction_keys.wait_for(data, stream=True)
        outcomes[name] = await _tcp_answers(edge.port, data, want)
    assert outcomes == expected
    await _still_serving(edge)


async def _still_serving(edge: RunningEdge) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        options = (
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKalive\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=1\r\n"
            "To: <sip:127.0.0.1>\r\nCall-ID: alive-1\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        await loop.sock_sendto(sock, options.encode(), ("127.0.0.1", edge.port))
        answer = await asyncio.wait_for(loop.sock_recv(sock, 65535), 3)
        assert _final_status(answer) == 200
    finally:
        sock.close()
