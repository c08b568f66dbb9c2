"""Every RFC 4475 torture message, with the outcome the RFC expects.

Each row says what the parser must do (parse, or raise ``SipParseError`` with
a reason) and what the edge must answer: a status code, ``"drop"`` (an
invalid response is discarded), or ``None`` when the request passes the
generic checks and is handled by the registrar/B2BUA. ``layer`` records which
part of the core produces the answer; rows with ``layer="tu"`` depend on
policy outside the core (e.g. the registrar's 401 challenge) and are only
documented here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from callmesh_sip_edge.sip.errors import SipParseError
from callmesh_sip_edge.sip.message import SipRequest, SipResponse
from callmesh_sip_edge.sip.parser import StreamFramer, build_error_response, parse_message
from callmesh_sip_edge.sip.uri import AbsoluteUri, SipUri
from callmesh_sip_edge.sip.validation import check_request

# The RFC 4475 corpus (plus test.dat) kept in the repository, so a fresh clone is complete.
CORPUS = Path(__file__).resolve().parent / "data" / "rfc4475"


@dataclass(frozen=True)
class Expectation:
    parses: bool
    edge_answer: int | str | None
    layer: str  # "parser", "check", "tu", "transaction"
    reason_contains: str = ""
    note: str = ""


TABLE: dict[str, Expectation] = {
    # 3.1.1 valid messages
    "wsinv": Expectation(True, None, "check", note="3.1.1.1 short tortuous INVITE"),
    "intmeth": Expectation(
        True, 501, "check", note="3.1.1.2 wide range of valid chars; unknown method"
    ),
    "esc01": Expectation(True, None, "check", note="3.1.1.3 escaped URIs"),
    "escnull": Expectation(True, None, "check", note="3.1.1.4 escaped nulls in URIs"),
    "esc02": Expectation(True, 501, "check", note="3.1.1.5 '%' in method: unknown method"),
    "lwsdisp": Expectation(True, None, "check", note="3.1.1.6 no LWS between display name and <"),
    "longreq": Expectation(True, None, "check", note="3.1.1.7 long values"),
    "dblreq": Expectation(True, None, "check", note="3.1.1.8 extra trailing octets in UDP"),
    "semiuri": Expectation(True, None, "check", note="3.1.1.9 semicolon-separated user part"),
    "transports": Expectation(True, None, "check", note="3.1.1.10 varied transports in Via"),
    "mpart01": Expectation(
        True, 405, "check", note="3.1.1.11 multipart MESSAGE: edge has no MESSAGE"
    ),
    "unreason": Expectation(True, "drop", "transaction", note="3.1.1.12 UTF-8 reason phrase"),
    "noreason": Expectation(True, "drop", "transaction", note="3.1.1.13 empty reason phrase"),
    # 3.1.2 invalid messages
    "badinv01": Expectation(False, 400, "parser", "Via", note="3.1.2.1 extraneous separators"),
    "clerr": Expectation(False, 400, "parser", "Content-Length", note="3.1.2.2 CL > message"),
    "ncl": Expectation(False, 400, "parser", "Content-Length", note="3.1.2.3 negative CL"),
    "scalar02": Expectation(False, 400, "parser", "CSeq", note="3.1.2.4 overlarge request scalars"),
    "scalarlg": Expectation(
        False, "drop", "parser", "CSeq", note="3.1.2.5 overlarge response scalars"
    ),
    "quotbal": Expectation(False, 400, "parser", "quoted", note="3.1.2.6 unterminated quote"),
    "ltgtruri": Expectation(
        False, 400, "parser", "Request-URI", note="3.1.2.7 <> around Request-URI"
    ),
    "lwsruri": Expectation(False, 400, "parser", "Request-Line", note="3.1.2.8 LWS in Request-URI"),
    "lwsstart": Expectation(False, 400, "parser", "Request-Line", note="3.1.2.9 multiple SP"),
    "trws": Expectation(False, 400, "parser", "Request-Line", note="3.1.2.10 SP after SIP-Version"),
    "escruri": Expectation(
        False, 400, "parser", "Request-URI", note="3.1.2.11 headers in Request-URI"
    ),
    "baddate": Expectation(True, None, "check", note="3.1.2.12 non-GMT Date: ignored, RFC allows"),
    "regbadct": Expectation(False, 400, "parser", "<>", note="3.1.2.13 addr-spec Contact with '?'"),
    "badaspec": Expectation(False, 400, "parser", "To", note="3.1.2.14 spaces inside <>"),
    "baddn": Expectation(False, 400, "parser", "display name", note="3.1.2.15 ',' in display name"),
    "badvers": Expectation(False, 505, "parser", "Version", note="3.1.2.16 SIP/7.0"),
    "mismatch01": Expectation(True, 400, "check", note="3.1.2.17 CSeq method mismatch"),
    "mismatch02": Expectation(True, 501, "check", note="3.1.2.18 unknown method + mismatch"),
    "bigcode": Expectation(
        False, "drop", "parser", "status code", note="3.1.2.19 status 4294967301"
    ),
    # 3.2 transaction layer
    "badbranch": Expectation(
        True, None, "check", note="3.2.1 branch is only the cookie: 2543 rules"
    ),
    # 3.3 application layer
    "insuf": Expectation(False, 400, "parser", "Missing", note="3.3.1 missing Call-ID/From/To"),
    "unkscm": Expectation(True, 416, "check", note="3.3.2 unknown Request-URI scheme"),
    "novelsc": Expectation(True, 416, "check", note="3.3.3 soap.beep Request-URI"),
    "unksm2": Expectation(True, 400, "check", note="3.3.4 REGISTER To isbn: (not SIP AOR)"),
    "bext01": Expectation(True, 420, "check", note="3.3.5 unknown Require"),
    "invut": Expectation(True, 415, "check", note="3.3.6 unknown Content-Type"),
    "regaut01": Expectation(
        True, 401, "tu", note="3.3.7 unknown auth scheme: registrar challenges"
    ),
    "multi01": Expectation(
        False, 400, "parser", "Multiple", note="3.3.8 duplicated single headers"
    ),
    "mcl01": Expectation(False, 400, "parser", "Content-Length", note="3.3.9 several CL headers"),
    "bcast": Expectation(True, "drop", "transaction", note="3.3.10 broadcast Via: no transaction"),
    "zeromf": Expectation(True, None, "check", note="3.3.11 Max-Forwards 0 OPTIONS: answered here"),
    "cparam01": Expectation(True, None, "check", note="3.3.12 contact param without <>"),
    "cparam02": Expectation(True, None, "check", note="3.3.13 URI param inside <>"),
    "regescrt": Expectation(True, None, "check", note="3.3.14 escaped Route in Contact URI"),
    "sdp01": Expectation(True, 406, "check", note="3.3.15 Accept lacks application/sdp"),
    "inv2543": Expectation(True, None, "check", note="3.4 RFC 2543 INVITE"),
    # Not from RFC 4475: a garbled request without version or Via.
    "test": Expectation(False, "drop", "parser", "Request-Line", note="no Via: cannot answer"),
}


def test_table_covers_every_corpus_file() -> None:
    files = {path.stem for path in CORPUS.glob("*.dat")}
    assert files == set(TABLE)
    assert len(files) == 50  # the 49 RFC 4475 messages plus test.dat


@pytest.mark.parametrize("name", sorted(TABLE))
def test_rfc4475_message(name: str) -> None:
    expected = TABLE[name]
    data = (CORPUS / f"{name}.dat").read_bytes()
    if not expected.parses:
        with pytest.raises(SipParseError) as raised:
            message = parse_message(data)
            message.validate()
        error = raised.value
        assert expected.reason_contains in error.reason
        answer = build_error_response(data, error)
        if expected.edge_answer == "drop":
            assert answer is None
        else:
            assert answer is not None
            status_line, _, rest = answer.partition(b"\r\n")
            assert status_line == f"SIP/2.0 {expected.edge_answer} {error.reason}".encode()
            # The Via lines are echoed unchanged so that the answer can be routed back.
            request_vias = [
                line.split(b":", 1)[1].strip()
                for line in data.split(b"\r\n")
                if line.lower().startswith((b"via:", b"v:"))
            ]
            answer_vias = [
                line[len(b"Via: ") :] for line in rest.split(b"\r\n") if line.startswith(b"Via: ")
            ]
            assert answer_vias == request_vias
            assert answer.endswith(b"Content-Length: 0\r\n\r\n")
        return
    message = parse_message(data)
    message.validate()
    if isinstance(message, SipResponse):
        assert expected.edge_answer == "drop"
        return
    assert isinstance(message, SipRequest)
    rejection = check_request(message)
    if expected.layer == "check":
        got = None if rejection is None else rejection.status_code
        assert got == expected.edge_answer
    else:
        assert rejection is None


def test_wsinv_fields() -> None:
    message = parse_message((CORPUS / "wsinv.dat").read_bytes())
    assert isinstance(message, SipRequest)
    assert message.method == "INVITE"
    assert message.to.tag == "1918181833n"
    assert message.from_.display_name == 'J Rosenberg \\"'
    assert message.from_.tag == "98asjd8"
    assert message.max_forwards == 68
    assert message.cseq.seq == 9 and message.cseq.method == "INVITE"
    vias = message.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert message.get("NewFangledHeader") == "newfangled value continued newfangled value"
    contact = message.contact
    assert contact is not None
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert message.get("subject") == ""
    assert len(message.body) == 150
    routes = message.routes
    assert isinstance(routes[0].uri, SipUri) and routes[0].uri.loose_route


def test_esc01_unescapes_uri_components() -> None:
    message = parse_message((CORPUS / "esc01.dat").read_bytes())
    assert isinstance(message, SipRequest) and isinstance(message.uri, SipUri)
    assert message.uri.user == "sips:user@example.com"
    assert isinstance(message.to.uri, SipUri) and message.to.uri.user == "user"
    contact = message.contact
    assert contact is not None and isinstance(contact.uri, SipUri)
    assert contact.uri.user == "caller"
    assert contact.uri.params == {"lr": None, "name": "value%41"}
    assert message.from_.uri.user == "I have spaces"  # type: ignore[union-attr]


def test_escnull_and_semiuri_users() -> None:
    escnull = parse_message((CORPUS / "escnull.dat").read_bytes())
    assert escnull.to.uri.user == "null-\x00-null"  # type: ignore[union-attr]
    contacts = escnull.contacts
    assert isinstance(contacts, list) and len(contacts) == 2
    semiuri = parse_message((CORPUS / "semiuri.dat").read_bytes())
    assert isinstance(semiuri, SipRequest) and isinstance(semiuri.uri, SipUri)
    assert semiuri.uri.user == "user;par=u@example.net"
    assert semiuri.uri.host == "example.com"
    assert semiuri.uri.params == {}


def test_intmeth_and_esc02_keep_exotic_tokens() -> None:
    message = parse_message((CORPUS / "intmeth.dat").read_bytes())
    assert isinstance(message, SipRequest)
    assert message.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert message.cseq.method == message.method
    assert message.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert message.from_.params["fromparam''~+*_!.-%"] == "работающий"
    assert message.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert message.call_id.startswith("intmeth.word%ZK-!.*_+'@word`~)(><:")
    esc02 = parse_message((CORPUS / "esc02.dat").read_bytes())
    assert esc02.get_all("contact") == [
        "<sip:alias1@host1.example.com>",
        "<sip:alias3@host3.example.com>",
    ]
    assert esc02.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_dblreq_udp_ignores_trailing_request_but_tcp_framer_finds_two() -> None:
    data = (CORPUS / "dblreq.dat").read_bytes()
    message = parse_message(data)
    assert message.body == b""
    frames = StreamFramer().feed(data)
    # Over a stream the INVITE is framed too; its body is 5 bytes longer than its
    # Content-Length, and those leftover bytes are not a message: the stream fails.
    assert len(frames.messages) == 2
    second = parse_message(frames.messages[1], stream=True)
    assert isinstance(second, SipRequest) and second.method == "INVITE"
    assert frames.error is not None and "Content-Length" in frames.error.reason


def test_unknown_schemes_are_kept_opaque() -> None:
    message = parse_message((CORPUS / "unksm2.dat").read_bytes())
    assert message.to.uri == AbsoluteUri("isbn", "2983792873")
    assert message.from_.uri == AbsoluteUri("http", "//www.example.com")
    contact = message.contact
    assert contact is not None and contact.uri == AbsoluteUri("name", "John_Smith")


def test_cparam_params_land_on_contact_or_uri() -> None:
    outside = parse_message((CORPUS / "cparam01.dat").read_bytes()).contact
    inside = parse_message((CORPUS / "cparam02.dat").read_bytes()).contact
    assert outside is not None and inside is not None
    assert outside.params == {"unknownparam": None}
    assert outside.uri.params == {}  # type: ignore[union-attr]
    assert inside.params == {}
    assert inside.uri.params == {"unknownparam": None}  # type: ignore[union-attr]


def test_regescrt_contact_uri_headers_unescaped() -> None:
    contact = parse_message((CORPUS / "regescrt.dat").read_bytes()).contact
    assert contact is not None and isinstance(contact.uri, SipUri)
    assert contact.uri.headers == {"Route": "<sip:sip.example.com>"}


def test_insuf_400_carries_what_was_recoverable() -> None:
    data = (CORPUS / "insuf.dat").read_bytes()
    with pytest.raises(SipParseError) as raised:
        parse_message(data)
    answer = build_error_response(data, raised.value)
    assert answer is not None
    text = answer.decode()
    assert "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\r\n" in text
    assert "CSeq: 193942 INVITE\r\n" in text
    assert "\r\nCall-ID:" not in text and "\r\nFrom:" not in text


def test_every_message_survives_the_tcp_framer() -> None:
    """Over TCP each file is framed by its Content-Length (or rejected cleanly)."""
    for path in sorted(CORPUS.glob("*.dat")):
        framer = StreamFramer()
        frames = framer.feed(path.read_bytes())
        # Each file is framed, rejected, or (baddn: no empty line) still incomplete.
        assert frames.messages or frames.error is not None or framer.buffered, path.name
        for frame in frames.messages:
            with contextlib.suppress(SipParseError):
                parse_message(frame, stream=True).validate()
