"""Parser, serializer and stream framer behaviour beyond the RFC 4475 corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
from callmesh_sip_edge.sip.errors import SipParseError
from callmesh_sip_edge.sip.headers import ContactStar, parse_name_addr, parse_via
from callmesh_sip_edge.sip.message import SipRequest, SipResponse, build_response
from callmesh_sip_edge.sip.parser import (
    ParserLimits,
    StreamFramer,
    build_error_response,
    parse_message,
)
from callmesh_sip_edge.sip.uri import SipUri, parse_uri

# The RFC 4475 corpus (plus test.dat) kept in the repository, so a fresh clone is complete.
CORPUS = Path(__file__).resolve().parent / "data" / "rfc4475"


def make_request(
    *extra: str, body: bytes = b"", method: str = "INVITE", length: int | None = None
) -> bytes:
    lines = [
        f"{method} sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        "To: Bob <sip:bob@example.com>",
        "From: Alice <sip:alice@example.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.example.com",
        f"CSeq: 314159 {method}",
        *extra,
        f"Content-Length: {len(body) if length is None else length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_compact_names_map_to_long_names() -> None:
    data = (
        b"OPTIONS sip:a@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/TCP h.example.com;branch=z9hG4bKabc\r\n"
        b"f: <sip:b@example.com>;tag=1\r\nt: <sip:a@example.com>\r\ni: cid-1\r\n"
        b"CSeq: 1 OPTIONS\r\nm: <sip:b@10.0.0.1>\r\nk: timer\r\ns: hello\r\n"
        b"c: application/sdp\r\nx: 1800\r\no: presence\r\nu: dialog\r\nl: 0\r\n\r\n"
    )
    message = parse_message(data)
    assert message.call_id == "cid-1"
    assert message.get("Supported") == "timer"
    assert message.get("subject") == "hello"
    assert message.content_type == "application/sdp"
    assert message.get("session-expires") == "1800"
    assert message.get("event") == "presence"
    assert message.get("allow-events") == "dialog"
    assert message.top_via.transport == "TCP"
    out = message.to_bytes()
    assert b"\r\nCall-ID: cid-1\r\n" in out and b"\r\nSupported: timer\r\n" in out


def test_folded_header_lines_are_unfolded() -> None:
    data = make_request("Subject: first part\r\n  second part\r\n\tthird")
    message = parse_message(data)
    assert message.get("subject") == "first part second part third"


def test_comma_lists_respect_quotes_and_angle_brackets() -> None:
    data = make_request(
        'Contact: "Doe, John" <sip:j,k@a.example.com;x=1>;q=0.5, <sip:k@b.example.com>',
        "Contact: sip:l@c.example.com",
        "Allow: INVITE, ACK,BYE",
        "Allow: CANCEL",
    )
    message = parse_message(data)
    contacts = message.contacts
    assert isinstance(contacts, list)
    assert [c.display_name for c in contacts] == ["Doe, John", None, None]
    assert contacts[0].params == {"q": "0.5"}
    assert isinstance(contacts[0].uri, SipUri) and contacts[0].uri.user == "j,k"
    assert message.tokens("allow") == ["INVITE", "ACK", "BYE", "CANCEL"]


def test_contact_star() -> None:
    message = parse_message(make_request("Contact: *", "Expires: 0", method="REGISTER"))
    assert isinstance(message.contacts, ContactStar)
    assert message.contact is None and message.expires == 0


def test_quoted_string_escapes() -> None:
    name_addr = parse_name_addr(r'"a \"quoted\" \\ name" <sip:x@example.com>;tag=7')
    assert name_addr.display_name == 'a "quoted" \\ name'
    assert name_addr.tag == "7"
    assert parse_name_addr(str(name_addr)) == name_addr


def test_via_branch_rport_received() -> None:
    via = parse_via("SIP/2.0/UDP 10.0.0.1:5062;rport=40000;received=203.0.113.9;branch=z9hG4bKx1")
    assert (via.host, via.port, via.rport, via.received, via.branch) == (
        "10.0.0.1",
        5062,
        40000,
        "203.0.113.9",
        "z9hG4bKx1",
    )
    assert via.rfc3261_branch and via.wants_rport
    empty = parse_via("SIP/2.0/UDP [2001:db8::1];rport;branch=z9hG4bKy")
    assert empty.host == "[2001:db8::1]" and empty.rport is None and empty.wants_rport
    assert parse_via(str(via)) == via
    with pytest.raises(SipParseError, match="Via"):
        parse_via("SIP/2.0/UDP host;branch=")
    with pytest.raises(SipParseError, match="Via"):
        parse_via("SIP/2.0/UDP host:99999")


def test_uri_escapes_params_and_headers() -> None:
    uri = parse_uri(
        "sips:al%69ce:pw@[2001:db8::5]:5061;transport=tls;lr;maddr=239.1.1.1?subject=hi%20there&x=1"
    )
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "pw",
        "[2001:db8::5]",
        5061,
    )
    assert uri.params == {"transport": "tls", "lr": None, "maddr": "239.1.1.1"}
    assert uri.headers == {"subject": "hi there", "x": "1"}
    assert uri.transport == "tls" and uri.loose_route and uri.secure
    assert parse_uri(str(uri)) == uri
    assert parse_uri("sip:%61lice@example.com").matches(parse_uri("sip:alice@EXAMPLE.com"))
    for bad in ("sip:", "sip:user@", "sip:a@b:x", "sip:a@b;=x", "sip:a%4@b", "sip:a b@c"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


def test_udp_content_length_smaller_truncates_larger_fails() -> None:
    body = b"v=0\r\nexcess"
    message = parse_message(make_request(body=body, length=5))
    assert message.body == b"v=0\r\n"
    with pytest.raises(SipParseError, match="Content-Length exceeds"):
        parse_message(make_request(body=body, length=len(body) + 1))


def test_missing_content_length_udp_vs_stream() -> None:
    data = make_request()
    data = data.replace(b"Content-Length: 0\r\n", b"") + b"body"
    assert parse_message(data).body == b"body"
    with pytest.raises(SipParseError, match="Missing Content-Length"):
        parse_message(data, stream=True)


def test_size_limits() -> None:
    limits = ParserLimits(max_message_size=600, max_headers=10, max_header_length=100)
    with pytest.raises(SipParseError) as raised:
        parse_message(make_request(body=b"x" * 600), limits=limits)
    assert raised.value.status_code == 513
    with pytest.raises(SipParseError, match="Too Many Headers"):
        parse_message(make_request(*[f"X-H{i}: {i}" for i in range(5)]), limits=limits)
    with pytest.raises(SipParseError, match="Header Too Long"):
        parse_message(make_request("Subject: " + "s" * 200), limits=limits)


def test_rejects_bare_lf_and_bad_header_names() -> None:
    with pytest.raises(SipParseError, match="Bare CR or LF"):
        parse_message(make_request("Subject: a\nb"))
    with pytest.raises(SipParseError, match="Invalid header name"):
        parse_message(make_request("Bad Name: x"))
    with pytest.raises(SipParseError, match="Malformed header"):
        parse_message(make_request("NoColonHere"))


def test_status_line_and_request_line() -> None:
    response = parse_message(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKq\r\nTo: <sip:a@b>;tag=9\r\n"
        b"From: <sip:c@d>;tag=3\r\nCall-ID: x\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(response, SipResponse)
    assert (response.status_code, response.reason) == (180, "Ringing")
    assert response.to_bytes().startswith(b"SIP/2.0 180 Ringing\r\n")
    for bad in (b"SIP/2.0 99 Low", b"SIP/2.0 1000 Big", b"SIP/3.0 200 OK", b"SIP/2.0 2x0 OK"):
        with pytest.raises(SipParseError):
            parse_message(bad + b"\r\nVia: SIP/2.0/UDP h\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(SipParseError) as raised:
        parse_message(make_request().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
    assert raised.value.status_code == 505


def test_leading_crlf_is_ignored() -> None:
    assert isinstance(parse_message(b"\r\n\r\n" + make_request()), SipRequest)


def test_lazy_parse_defers_from_to_contact() -> None:
    data = make_request().replace(
        b"From: Alice <sip:alice@example.com>", b"From: Bad, Name <sip:x@y>"
    )
    message = parse_message(data, lazy=True)
    assert message.call_id == "a84b4c76e66710@pc33.example.com"
    with pytest.raises(SipParseError, match="display name"):
        _ = message.from_
    with pytest.raises(SipParseError):
        parse_message(data)


def test_header_editing_keeps_cache_consistent() -> None:
    message = parse_message(make_request("Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>"))
    assert message.top_via.host == "pc33.example.com"
    message.add_header("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew", first=True)
    assert message.top_via.host == "proxy.example.com"
    assert [v.host for v in message.vias] == ["proxy.example.com", "pc33.example.com"]
    message.remove_first("Via")
    assert message.top_via.host == "pc33.example.com"
    assert [r.uri.host for r in message.routes] == ["p1.example.com", "p2.example.com"]  # type: ignore[union-attr]
    message.remove_first("Route")
    assert [r.uri.host for r in message.routes] == ["p2.example.com"]  # type: ignore[union-attr]
    message.set_header("Max-Forwards", "69")
    assert message.max_forwards == 69
    message.remove_header("Route")
    assert message.routes == [] and not message.has("route")
    reparsed = parse_message(message.to_bytes())
    assert reparsed.max_forwards == 69 and reparsed.get_all("via") == message.get_all("via")


def test_build_response_copies_and_tags() -> None:
    request = parse_message(make_request("Record-Route: <sip:rr.example.com;lr>"))
    assert isinstance(request, SipRequest)
    ringing = build_response(request, 180, to_tag="abc")
    assert ringing.to.tag == "abc" and ringing.reason == "Ringing"
    assert ringing.get_all("record-route") == ["<sip:rr.example.com;lr>"]
    assert ringing.get_all("via") == request.get_all("via")
    assert (ringing.call_id, ringing.cseq, ringing.from_.tag) == (
        request.call_id,
        request.cseq,
        "1928301774",
    )
    trying = build_response(request, 100, to_tag="abc")
    assert trying.to.tag is None  # 100 Trying never carries a To tag
    busy = build_response(request, 486, to_tag="abc")
    assert not busy.has("record-route")
    parsed = parse_message(busy.to_bytes())
    assert isinstance(parsed, SipResponse) and parsed.status_code == 486


def test_valid_corpus_messages_round_trip() -> None:
    for path in sorted(CORPUS.glob("*.dat")):
        data = path.read_bytes()
        try:
            first = parse_message(data)
            first.validate()
        except SipParseError:
            continue
        second = parse_message(first.to_bytes())
        assert second.start_line() == first.start_line(), path.name
        assert second.headers == [(n, v) for n, v in first.headers if n != "Content-Length"] + [
            ("Content-Length", str(len(first.body)))
        ], path.name
        assert second.body == first.body


# -- stream framing -----------------------------------------------------


def test_framer_handles_byte_by_byte_input_and_pings() -> None:
    one = make_request(body=b"hello", length=5)
    two = make_request(method="OPTIONS")
    stream = b"\r\n\r\n" + one + b"\r\n\r\n" + two
    framer = StreamFramer()
    found: list[bytes] = []
    pings = 0
    for i in range(len(stream)):
        frames = framer.feed(stream[i : i + 1])
        assert frames.error is None
        found.extend(frames.messages)
        pings += frames.keepalive_pings
    assert found == [one, two]
    assert pings == 2
    assert framer.buffered == 0


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "Missing Content-Length"),
        ("Content-Length: -5", "Invalid Content-Length"),
        ("Content-Length: abc", "Invalid Content-Length"),
        ("Content-Length: 1\r\nl: 1", "Multiple Content-Length"),
        ("Content-Length: 99999999", "Message Too Large"),
    ],
)
def test_framer_rejects_bad_lengths(header: str, reason: str) -> None:
    data = make_request().replace(
        b"Content-Length: 0\r\n", (header + "\r\n").encode() if header else b""
    )
    frames = StreamFramer().feed(data)
    assert frames.messages == []
    assert frames.error is not None and reason in frames.error.reason
    answer = build_error_response(frames.error.head, frames.error)
    assert answer is not None and answer.startswith(b"SIP/2.0 ")


def test_framer_limits_header_block_and_stays_failed() -> None:
    framer = StreamFramer(ParserLimits(max_message_size=1000))
    frames = framer.feed(b"INVITE sip:a@b SIP/2.0\r\nSubject: " + b"x" * 2000)
    assert frames.error is not None and frames.error.status_code == 513
    again = framer.feed(make_request())
    assert again.error is frames.error and again.messages == []


def test_error_response_not_sent_for_responses_or_ack() -> None:
    error = SipParseError("Bad Request - test")
    assert build_error_response(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n", error) is None
    assert build_error_response(make_request(method="ACK"), error) is None
    assert build_error_response(b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n", error) is None
    answer = build_error_response(make_request(), error, to_tag="t1")
    assert answer is not None
    assert b"\r\nTo: Bob <sip:bob@example.com>;tag=t1\r\n" in answer
