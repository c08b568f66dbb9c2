"""Property: any message we can build serializes to bytes that parse back to it."""

from __future__ import annotations

import string

from callmesh_sip_edge.sip.digest import (
    DigestAlgorithm,
    DigestChallenge,
    build_authorization,
    parse_challenge,
    parse_credentials,
)
from callmesh_sip_edge.sip.headers import NameAddr, Via
from callmesh_sip_edge.sip.message import SipRequest, SipResponse
from callmesh_sip_edge.sip.parser import StreamFramer, parse_message
from callmesh_sip_edge.sip.sdp import (
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SessionDescription,
    parse_sdp,
)
from callmesh_sip_edge.sip.uri import SipUri
from hypothesis import given, settings
from hypothesis import strategies as st

TOKEN_ALPHABET = string.ascii_letters + string.digits + "-.!%*_+`'~"
tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=12)
labels = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10)
hosts = st.one_of(
    st.lists(labels, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.just("[2001:db8::1]"),
)
# Any printable text, including characters that must be escaped in a URI.
free_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12
)
param_values = st.one_of(st.none(), tokens)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    params = draw(st.dictionaries(tokens.map(str.lower), param_values, max_size=3))
    headers = draw(st.dictionaries(tokens, free_text, max_size=2))
    return SipUri(
        host=draw(hosts),
        user=draw(st.one_of(st.none(), free_text)),
        password=None,
        port=draw(st.one_of(st.none(), st.integers(1, 65535))),
        scheme=draw(st.sampled_from(["sip", "sips"])),
        params=params,
        headers=headers,
    )


@st.composite
def name_addrs(draw: st.DrawFn, tag: bool = True) -> NameAddr:
    display = draw(
        st.one_of(
            st.none(),
            st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=16),
        )
    )
    params = draw(st.dictionaries(tokens.map(str.lower), param_values, max_size=2))
    if tag:
        params["tag"] = draw(tokens)
    uri = draw(sip_uris())
    return NameAddr(uri, display, params)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params: dict[str, str | None] = {"branch": "z9hG4bK" + draw(tokens)}
    if draw(st.booleans()):
        params["rport"] = None
    return Via(
        draw(st.sampled_from(["UDP", "TCP", "TLS", "WS"])),
        draw(hosts),
        draw(st.one_of(st.none(), st.integers(1, 65535))),
        params,
    )


@st.composite
def requests(draw: st.DrawFn) -> SipRequest:
    method = draw(st.one_of(st.sampled_from(["INVITE", "BYE", "REGISTER", "OPTIONS"]), tokens))
    request = SipRequest(method, draw(sip_uris()).without_headers())
    for via in draw(st.lists(vias(), min_size=1, max_size=3)):
        request.add_header("Via", str(via))
    request.add_header("From", str(draw(name_addrs())))
    request.add_header("To", str(draw(name_addrs(tag=draw(st.booleans())))))
    request.add_header("Call-ID", draw(tokens) + "@" + draw(hosts))
    request.add_header("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    request.add_header("Max-Forwards", str(draw(st.integers(0, 255))))
    for contact in draw(st.lists(name_addrs(tag=False), max_size=2)):
        request.add_header("Contact", str(contact))
    for name, value in draw(
        st.lists(st.tuples(tokens.map(lambda t: "X-" + t), free_text.map(str.strip)), max_size=3)
    ):
        request.add_header(name, value)
    request.body = draw(st.binary(max_size=64))
    return request


def _same_request(a: SipRequest, b: SipRequest) -> None:
    assert b.method == a.method
    assert b.uri == a.uri
    assert b.vias == a.vias
    assert b.from_ == a.from_
    assert b.to == a.to
    assert b.call_id == a.call_id
    assert b.cseq == a.cseq
    assert b.max_forwards == a.max_forwards
    assert b.contacts == a.contacts
    assert b.body == a.body
    assert b.headers[:-1] == [h for h in a.headers if h[0] != "Content-Length"]


@settings(max_examples=150, deadline=None)
@given(requests())
def test_request_round_trip(request: SipRequest) -> None:
    data = request.to_bytes()
    parsed = parse_message(data)
    assert isinstance(parsed, SipRequest)
    _same_request(request, parsed)
    # The same bytes framed from a stream give the same message.
    frames = StreamFramer().feed(data)
    assert frames.messages == [data]
    again = parse_message(parsed.to_bytes())
    assert isinstance(again, SipRequest)
    assert again.to_bytes() == parsed.to_bytes()


@settings(max_examples=100, deadline=None)
@given(
    st.integers(100, 699),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20),
    vias(),
    name_addrs(),
    name_addrs(),
)
def test_response_round_trip(
    code: int, reason: str, via: Via, from_: NameAddr, to: NameAddr
) -> None:
    response = SipResponse(code, reason.strip())
    response.add_header("Via", str(via))
    response.add_header("From", str(from_))
    response.add_header("To", str(to))
    response.add_header("Call-ID", "abc@host")
    response.add_header("CSeq", "7 INVITE")
    parsed = parse_message(response.to_bytes())
    assert isinstance(parsed, SipResponse)
    assert (parsed.status_code, parsed.reason) == (code, reason.strip())
    assert parsed.top_via == via
    assert parsed.from_ == from_ and parsed.to == to


@st.composite
def sdp_sessions(draw: st.DrawFn) -> SessionDescription:
    address = draw(st.tuples(*[st.integers(1, 254)] * 4).map(lambda t: ".".join(map(str, t))))
    media = []
    for _ in range(draw(st.integers(0, 3))):
        formats = draw(st.lists(st.integers(0, 127).map(str), min_size=1, max_size=5, unique=True))
        attributes: list[tuple[str, str | None]] = [
            ("rtpmap", f"{fmt} X{fmt}/8000") for fmt in formats if int(fmt) >= 96
        ]
        direction = draw(st.sampled_from(list(Direction)))
        attributes.append((direction.value, None))
        if draw(st.booleans()):
            attributes.append(("ptime", str(draw(st.integers(10, 60)))))
        media.append(
            MediaDescription(
                draw(st.sampled_from(["audio", "video"])),
                draw(st.integers(0, 65535)),
                "RTP/AVP",
                formats,
                attributes=attributes,
            )
        )
    return SessionDescription(
        Origin(
            draw(tokens),
            str(draw(st.integers(0, 2**63))),
            draw(st.integers(0, 2**63)),
            "IN",
            "IP4",
            address,
        ),
        session_name=draw(tokens),
        connection=Connection("IN", "IP4", address),
        media=media,
    )


@settings(max_examples=100, deadline=None)
@given(sdp_sessions())
def test_sdp_round_trip(session: SessionDescription) -> None:
    parsed = parse_sdp(session.to_bytes())
    assert parsed == session
    assert parsed.to_bytes() == session.to_bytes()


@settings(max_examples=100, deadline=None)
@given(free_text, free_text, free_text, st.sampled_from(list(DigestAlgorithm)), st.booleans())
def test_digest_credentials_round_trip(
    username: str, uri: str, cnonce: str, algorithm: DigestAlgorithm, qop: bool
) -> None:
    challenge = DigestChallenge("realm", "nonce", algorithm, ("auth",) if qop else (), "opaque")
    assert parse_challenge(challenge.to_header_value()) == challenge
    credentials = build_authorization(
        challenge, username=username, method="REGISTER", uri=uri, password="pw", cnonce=cnonce
    )
    assert parse_credentials(credentials.to_header_value()) == credentials
