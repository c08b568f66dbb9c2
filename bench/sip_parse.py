"""Parse-speed benchmark for the sip-edge message parser.

Prints ``sip_parse_invite: N msg/s`` for an 879-byte INVITE with an SDP body
(the size used in /work/shared/research/dependencies.md, where a hand-written
partition/split parser reached 228k msg/s and sipmessage's lazy parse 88k/s),
plus the cost of touching the fields a B2BUA reads and of serializing.
"""

from __future__ import annotations

import time

from callmesh_sip_edge.sip.parser import parse_message

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


if __name__ == "__main__":
    main()
