"""Dialog state from INVITE/2xx and in-dialog request construction (RFC 3261 12, 13)."""

from __future__ import annotations

import pytest
from callmesh_sip_edge.sip.dialog import Dialog, DialogState, via_value
from callmesh_sip_edge.sip.errors import DialogError
from callmesh_sip_edge.sip.message import SipRequest, SipResponse, build_response
from callmesh_sip_edge.sip.parser import parse_message
from callmesh_sip_edge.sip.uri import SipUri, parse_uri

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Record-Route: <sip:p2.biloxi.example.com;lr>\r\n"
    b"Record-Route: <sip:p1.atlanta.example.com;lr>\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
OUR_CONTACT = "<sip:edge@203.0.113.5:5060>"


def state_of(dialog: Dialog) -> DialogState:
    # A call, so that mypy does not narrow the state across mutating calls.
    return dialog.state


def invite() -> SipRequest:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    return request


def response(request: SipRequest, code: int, contact: str = "<sip:bob@192.0.2.4>") -> SipResponse:
    reply = build_response(request, code, to_tag="a6c85cf")
    reply.add_header("Contact", contact)
    return parse_message(reply.to_bytes())  # type: ignore[return-value]


def test_uac_dialog_early_then_confirmed_and_bye() -> None:
    request = invite()
    ringing = response(request, 180)
    dialog = Dialog.from_uac_response(request, ringing, local_contact=OUR_CONTACT)
    assert state_of(dialog) is DialogState.EARLY
    assert dialog.id == ("a84b4c76e66710", "1928301774", "a6c85cf")
    # The UAC's route set is the Record-Route of the response, reversed.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.atlanta.example.com;lr",
        "sip:p2.biloxi.example.com;lr",
    ]
    ok = response(request, 200, contact="<sip:bob@192.0.2.99:5070>")
    dialog.receive_response(request, ok)
    assert state_of(dialog) is DialogState.CONFIRMED
    assert dialog.remote_target == parse_uri("sip:bob@192.0.2.99:5070")
    ack = dialog.create_ack(via=via_value("udp", "203.0.113.5", 5060))
    assert ack.method == "ACK" and ack.cseq.seq == 314159 and ack.cseq.method == "ACK"
    assert ack.uri == dialog.remote_target
    assert ack.top_via.rfc3261_branch and ack.top_via.wants_rport
    bye = dialog.create_request("BYE", via=via_value("UDP", "203.0.113.5", 5060))
    assert bye.cseq.seq == 314160 and bye.cseq.method == "BYE"
    assert bye.uri == dialog.remote_target
    assert bye.get_all("route") == [
        "<sip:p1.atlanta.example.com;lr>",
        "<sip:p2.biloxi.example.com;lr>",
    ]
    assert bye.from_.tag == "1928301774" and bye.from_.display_name == "Alice"
    assert bye.to.tag == "a6c85cf" and bye.call_id == "a84b4c76e66710"
    assert not bye.has("contact")
    reparsed = parse_message(bye.to_bytes())
    assert isinstance(reparsed, SipRequest) and reparsed.routes == bye.routes
    dialog.receive_response(bye, response(bye, 200))
    assert state_of(dialog) is DialogState.TERMINATED
    with pytest.raises(DialogError):
        dialog.create_request("INFO", via=via_value("UDP", "h", None))


def test_uac_dialog_requires_to_tag_and_contact() -> None:
    request = invite()
    no_tag = build_response(request, 180)
    with pytest.raises(DialogError, match="To tag"):
        Dialog.from_uac_response(request, no_tag, local_contact=OUR_CONTACT)
    no_contact = build_response(request, 200, to_tag="x")
    with pytest.raises(DialogError, match="Contact"):
        Dialog.from_uac_response(request, no_contact, local_contact=OUR_CONTACT)


def test_uas_dialog_and_its_requests() -> None:
    request = invite()
    dialog = Dialog.from_uas_request(request, local_tag="edge77", local_contact=OUR_CONTACT)
    assert dialog.id == ("a84b4c76e66710", "edge77", "1928301774")
    assert dialog.id == Dialog.id_for_incoming_request(
        parse_message(
            INVITE.replace(
                b"Bob <sip:bob@biloxi.example.com>", b"<sip:bob@biloxi.example.com>;tag=edge77"
            )
        )  # type: ignore[arg-type]
    )
    # The UAS keeps Record-Route in order.
    assert [str(r.uri.host) for r in dialog.route_set] == [  # type: ignore[union-attr]
        "p2.biloxi.example.com",
        "p1.atlanta.example.com",
    ]
    reinvite = dialog.create_request(
        "INVITE", via=via_value("UDP", "203.0.113.5", 5060), body=b"v=0\r\n"
    )
    assert reinvite.cseq.seq == 1 and dialog.invite_seq == 1
    assert reinvite.get("contact") == OUR_CONTACT
    assert reinvite.content_type == "application/sdp" and reinvite.body == b"v=0\r\n"
    assert reinvite.from_.tag == "edge77" and reinvite.to.tag == "1928301774"
    assert reinvite.uri == parse_uri("sip:alice@pc33.atlanta.example.com")


def test_uas_checks_remote_cseq_and_refreshes_target() -> None:
    dialog = Dialog.from_uas_request(invite(), local_tag="edge77", local_contact=OUR_CONTACT)
    info = parse_message(
        INVITE.replace(b"INVITE sip", b"INFO sip").replace(b"314159 INVITE", b"314160 INFO")
    )
    assert isinstance(info, SipRequest)
    dialog.receive_request(info)
    assert dialog.remote_seq == 314160
    with pytest.raises(DialogError, match="CSeq"):
        dialog.receive_request(info)
    reinvite = parse_message(
        INVITE.replace(b"314159 INVITE", b"314161 INVITE").replace(
            b"<sip:alice@pc33.atlanta.example.com>", b"<sip:alice@10.9.8.7:5099>"
        )
    )
    assert isinstance(reinvite, SipRequest)
    dialog.receive_request(reinvite)
    dialog.refresh_target(reinvite)
    assert dialog.remote_target == parse_uri("sip:alice@10.9.8.7:5099")
    assert dialog.invite_seq == 314161
    bye = parse_message(
        INVITE.replace(b"INVITE sip", b"BYE sip").replace(b"314159 INVITE", b"314162 BYE")
    )
    assert isinstance(bye, SipRequest)
    dialog.receive_request(bye)
    assert state_of(dialog) is DialogState.TERMINATED


def test_matches_ack_even_with_a_changed_to_tag() -> None:
    dialog = Dialog.from_uas_request(
        invite(), local_tag="edge77", local_contact=OUR_CONTACT, confirmed=True
    )
    pyvoip_ack = parse_message(
        INVITE.replace(b"INVITE sip", b"ACK sip")
        .replace(b"314159 INVITE", b"314159 ACK")
        .replace(b"Bob <sip:bob@biloxi.example.com>", b"<sip:bob@biloxi.example.com>;tag=made-up")
    )
    assert isinstance(pyvoip_ack, SipRequest)
    assert dialog.matches_ack(pyvoip_ack)
    wrong_cseq = parse_message(
        INVITE.replace(b"INVITE sip", b"ACK sip").replace(b"314159 INVITE", b"314158 ACK")
    )
    assert isinstance(wrong_cseq, SipRequest) and not dialog.matches_ack(wrong_cseq)


def test_strict_route_puts_first_route_in_request_uri() -> None:
    request = invite()
    strict = build_response(request, 200, to_tag="x")
    strict.remove_header("Record-Route")
    strict.add_header("Record-Route", "<sip:strict.example.com>")
    strict.add_header("Contact", "<sip:bob@192.0.2.4>")
    dialog = Dialog.from_uac_response(request, strict, local_contact=OUR_CONTACT)
    bye = dialog.create_request("BYE", via=via_value("UDP", "h", 5060))
    assert isinstance(bye.uri, SipUri) and bye.uri.host == "strict.example.com"
    assert bye.get_all("route") == ["<sip:bob@192.0.2.4>"]


def test_failed_invite_ends_early_dialog_and_481_ends_confirmed() -> None:
    request = invite()
    dialog = Dialog.from_uac_response(request, response(request, 183), local_contact=OUR_CONTACT)
    dialog.receive_response(request, response(request, 486))
    assert state_of(dialog) is DialogState.TERMINATED
    dialog2 = Dialog.from_uac_response(request, response(request, 200), local_contact=OUR_CONTACT)
    info = dialog2.create_request("INFO", via=via_value("UDP", "h", 5060))
    dialog2.receive_response(info, response(info, 481))
    assert state_of(dialog2) is DialogState.TERMINATED
    with pytest.raises(DialogError):
        dialog2.create_request("ACK", via="x")
