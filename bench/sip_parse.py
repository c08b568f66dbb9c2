"""Parse-speed benchmark for the sip-edge message parser.

Prints ``sip_parse_invite: N msg/s`` for an 879-byte INVITE with an SDP body
(the size used in /work/shared/research/dependencies.md, where a hand-written
partition/split parser reached 228k msg/s and sipmessage's lazy parse 88k/s),
plus the cost of touching the fields a B2BUA reads and of serializing.
"""

from __future__ import annotations

import time

from callmesh_sip_edge.sip.message import build_response
from callmesh_sip_edge.sip.parser import parse_message
from callmesh_sip_edge.sip.transaction import Destination, RequestReceived, TransactionLayer

_SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 198.51.100.7\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.7\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
_HEAD = (
    "INVITE sip:+15551230001@edge.example.com;user=phone SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Alice Smith" <sip:101@tenant1.example.com>;tag=1928301774\r\n'
    "To: <sip:+15551230001@edge.example.com;user=phone>\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:101@198.51.100.7:5060;transport=udp>;expires=3600\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, NOTIFY\r\n"
    "Supported: replaces, timer, 100rel\r\n"
    "User-Agent: ExamplePhone/5.2 (b441122)\r\n"
    "Session-Expires: 1800;refresher=uac\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(_SDP)}\r\n"
    "\r\n"
).encode()
INVITE = _HEAD + _SDP


def _call_messages(index: int) -> tuple[bytes, bytes, bytes]:
    """INVITE, ACK and BYE of one call, unique per ``index`` (branch, Call-ID, tag)."""
    invite = INVITE.replace(b"z9hG4bK776asdhds", b"z9hG4bK%08d" % index).replace(
        b"a84b4c76e66710@", b"%014d@" % index
    )
    common = (
        b"Max-Forwards: 70\r\n"
        b'From: "Alice Smith" <sip:101@tenant1.example.com>;tag=1928301774\r\n'
        b"To: <sip:+15551230001@edge.example.com;user=phone>;tag=edge1\r\n"
        b"Call-ID: %014d@pc33.atlanta.example.com\r\n" % index
    )
    ack = (
        b"ACK sip:edge@203.0.113.5 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKa%08d;rport\r\n"
        % index
        + common
        + b"CSeq: 314159 ACK\r\nContent-Length: 0\r\n\r\n"
    )
    bye = (
        b"BYE sip:edge@203.0.113.5 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKb%08d;rport\r\n"
        % index
        + common
        + b"CSeq: 314160 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    return invite, ack, bye


def uas_call_rate(calls: int = 5000) -> float:
    """Calls/s through the transaction layer as a UAS: INVITE, 100, 180, 200, ACK, BYE, 200.

    Parsing, response building, serialization, matching and timers included;
    no SDP work, no sockets.
    """
    messages = [_call_messages(i) for i in range(calls)]
    layer = TransactionLayer()
    source = Destination("UDP", "198.51.100.7", 5060)
    started = time.perf_counter()
    now = 0.0
    for invite, ack, bye in messages:
        now += 0.001
        layer.receive_data(invite, source, now)
        event = layer.next_event()
        assert isinstance(event, RequestReceived)
        request = event.request
        layer.send_response(event.transaction, build_response(request, 180, to_tag="edge1"), now)
        ok = build_response(request, 200, to_tag="edge1")
        ok.add_header("Contact", "<sip:edge@203.0.113.5>")
        layer.send_response(event.transaction, ok, now)
        layer.receive_data(ack, source, now)
        layer.next_event()
        layer.receive_data(bye, source, now)
        bye_event = layer.next_event()
        assert isinstance(bye_event, RequestReceived)
        layer.send_response(bye_event.transaction, build_response(bye_event.request, 200), now)
        layer.messages_to_send()
        layer.handle_timer(now)
    layer.handle_timer(now + 100.0)
    elapsed = time.perf_counter() - started
    assert len(layer) == 0
    return calls / elapsed


def _rate(function: object, seconds: float) -> float:
    assert callable(function)
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(1000):
            function()
        count += 1000
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def main(seconds: float = 2.0) -> None:
    data = INVITE

    def parse_only() -> None:
        parse_message(data)

    def parse_lazy() -> None:
        parse_message(data, lazy=True)

    def parse_and_read() -> None:
        message = parse_message(data)
        _ = message.contacts, message.vias, message.tokens("supported")

    parsed = parse_message(data)

    def serialize() -> None:
        parsed.to_bytes()

    print(f"sip_parse_invite_bytes: {len(data)} bytes")
    print(f"sip_parse_invite: {_rate(parse_only, seconds):.0f} msg/s")
    print(f"sip_parse_invite_lazy: {_rate(parse_lazy, seconds):.0f} msg/s")
    print(f"sip_parse_invite_read_fields: {_rate(parse_and_read, seconds):.0f} msg/s")
    print(f"sip_serialize_invite: {_rate(serialize, seconds):.0f} msg/s")
    calls = uas_call_rate()
    print(f"sip_core_uas_call: {calls:.0f} calls/s")
    print(f"sip_core_uas_call_cpu: {1e6 / calls:.0f} us/call")


if __name__ == "__main__":
    main()
