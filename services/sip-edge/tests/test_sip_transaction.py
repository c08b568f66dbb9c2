"""Transaction state machines driven by explicit ``now`` values (no sleeping)."""

from __future__ import annotations

import itertools

import pytest
from callmesh_sip_edge.sip.errors import TransactionError
from callmesh_sip_edge.sip.message import SipRequest, SipResponse, build_response, new_branch
from callmesh_sip_edge.sip.parser import parse_message
from callmesh_sip_edge.sip.transaction import (
    AckReceived,
    Destination,
    MalformedMessage,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TimerSettings,
    TransactionEvent,
    TransactionLayer,
    TransactionState,
    TransactionTimeout,
    build_cancel,
)

UDP_PEER = Destination("UDP", "198.51.100.7", 5060)
TCP_PEER = Destination("TCP", "198.51.100.7", 5060)


def request_bytes(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKinv1",
    to_tag: str | None = None,
    cseq: int = 1,
    cseq_method: str | None = None,
    from_tag: str = "caller1",
) -> bytes:
    via = "SIP/2.0/UDP 198.51.100.7:5060" + (f";branch={branch}" if branch else "")
    to = "<sip:bob@edge.example.com>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:bob@edge.example.com SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1@198.51.100.7\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:alice@198.51.100.7:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def outgoing_request(method: str = "INVITE") -> SipRequest:
    request = parse_message(request_bytes(method, branch=new_branch()))
    assert isinstance(request, SipRequest)
    return request


def events(layer: TransactionLayer) -> list[TransactionEvent]:
    out = []
    while (event := layer.next_event()) is not None:
        out.append(event)
    return out


def sent(layer: TransactionLayer) -> list[bytes]:
    return [item.data for item in layer.messages_to_send()]


def run_until(layer: TransactionLayer, end: float) -> list[float]:
    """Fire every timer up to ``end``; return the instants at which something was sent."""
    send_times = []
    while (deadline := layer.next_timer()) is not None and deadline <= end:
        layer.handle_timer(deadline)
        if layer.messages_to_send():
            send_times.append(deadline)
    return send_times


def answer(layer: TransactionLayer, request: SipRequest, code: int, now: float) -> SipResponse:
    response = build_response(request, code, to_tag="callee9")
    layer.receive(response, UDP_PEER, now)
    return response


# -- client INVITE -----------------------------------------------------------


def test_invite_client_retransmits_with_doubling_then_timer_b() -> None:
    layer = TransactionLayer()
    transaction = layer.send_request(outgoing_request(), UDP_PEER, now=0.0)
    assert len(sent(layer)) == 1
    assert transaction.state is TransactionState.CALLING
    # Timer A: T1, 2T1, 4T1, ... (no T2 cap for INVITE), until Timer B at 64*T1.
    assert run_until(layer, 31.9) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert events(layer) == []
    layer.handle_timer(32.0)
    (event,) = events(layer)
    assert isinstance(event, TransactionTimeout) and event.reason == "timer B"
    assert transaction.terminated and len(layer) == 0 and layer.next_timer() is None


def test_timers_follow_configured_t1() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.1, t2=0.4))
    layer.send_request(outgoing_request(), UDP_PEER, now=10.0)
    sent(layer)
    assert run_until(layer, 16.35) == pytest.approx([10.1, 10.3, 10.7, 11.5, 13.1, 16.3])
    assert events(layer) == []
    assert layer.next_timer() == pytest.approx(16.4)  # Timer B = 64*T1 = 6.4 s
    layer.handle_timer(16.4)
    assert isinstance(events(layer)[0], TransactionTimeout)


def test_invite_client_over_tcp_never_retransmits() -> None:
    layer = TransactionLayer()
    layer.send_request(outgoing_request(), TCP_PEER, now=0.0)
    sent(layer)
    assert layer.next_timer() == 32.0  # only Timer B
    assert run_until(layer, 40.0) == []
    assert isinstance(events(layer)[0], TransactionTimeout)


def test_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    transaction = layer.send_request(outgoing_request(), UDP_PEER, now=0.0)
    sent(layer)
    answer(layer, transaction.request, 180, now=0.2)
    (event,) = events(layer)
    assert isinstance(event, ResponseReceived) and event.response.status_code == 180
    assert transaction.state is TransactionState.PROCEEDING
    assert layer.next_timer() is None


def test_non_2xx_final_is_acked_by_the_transaction() -> None:
    layer = TransactionLayer()
    request = outgoing_request()
    transaction = layer.send_request(request, UDP_PEER, now=0.0)
    sent(layer)
    busy = answer(layer, request, 486, now=1.0)
    (ack_bytes,) = sent(layer)
    ack = parse_message(ack_bytes)
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    assert ack.uri == request.uri
    assert ack.cseq.seq == request.cseq.seq and ack.cseq.method == "ACK"
    assert ack.top_via.branch == request.top_via.branch  # same transaction
    assert ack.to.tag == "callee9" and ack.from_ == request.from_
    assert [type(e) for e in events(layer)] == [ResponseReceived]
    assert transaction.state is TransactionState.COMPLETED
    # A retransmitted 486 is answered with the same ACK and not passed up again.
    layer.receive(busy, UDP_PEER, now=2.0)
    assert sent(layer) == [ack_bytes] and events(layer) == []
    # Timer D (32 s on UDP) ends the transaction; later copies are stray.
    assert layer.next_timer() == 33.0
    layer.handle_timer(33.0)
    assert transaction.terminated
    layer.receive(busy, UDP_PEER, now=34.0)
    assert isinstance(events(layer)[0], StrayResponse)


def test_non_2xx_over_tcp_terminates_at_once() -> None:
    layer = TransactionLayer()
    transaction = layer.send_request(outgoing_request(), TCP_PEER, now=0.0)
    sent(layer)
    answer(layer, transaction.request, 503, now=1.0)
    assert len(sent(layer)) == 1  # the ACK
    assert transaction.terminated and layer.next_timer() is None


def test_2xx_goes_up_every_time_until_timer_m() -> None:
    layer = TransactionLayer()
    transaction = layer.send_request(outgoing_request(), UDP_PEER, now=0.0)
    sent(layer)
    ok = answer(layer, transaction.request, 200, now=1.0)
    assert sent(layer) == []  # the ACK for 2xx belongs to the dialog, not the transaction
    assert transaction.state is TransactionState.ACCEPTED
    layer.receive(ok, UDP_PEER, now=1.5)
    assert [type(e) for e in events(layer)] == [ResponseReceived, ResponseReceived]
    layer.handle_timer(33.0)  # Timer M = 64*T1 after the first 2xx
    assert transaction.terminated


def test_cancel_is_its_own_client_transaction() -> None:
    layer = TransactionLayer()
    invite = layer.send_request(outgoing_request(), UDP_PEER, now=0.0)
    answer(layer, invite.request, 180, now=0.1)
    cancel = layer.send_request(build_cancel(invite.request), UDP_PEER, now=1.0)
    assert cancel.key == (invite.request.top_via.branch, "CANCEL")
    events(layer)
    answer(layer, cancel.request, 200, now=1.1)
    answer(layer, invite.request, 487, now=1.2)
    got = events(layer)
    assert [
        (e.transaction, e.response.status_code) for e in got if isinstance(e, ResponseReceived)
    ] == [
        (cancel, 200),
        (invite, 487),
    ]


# -- client non-INVITE -------------------------------------------------------


def test_non_invite_client_caps_at_t2_then_timer_f() -> None:
    layer = TransactionLayer()
    layer.send_request(outgoing_request("OPTIONS"), UDP_PEER, now=0.0)
    sent(layer)
    assert run_until(layer, 31.9) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    layer.handle_timer(32.0)
    (event,) = events(layer)
    assert isinstance(event, TransactionTimeout) and event.reason == "timer F"


def test_non_invite_client_proceeding_retransmits_every_t2_then_timer_k() -> None:
    layer = TransactionLayer()
    transaction = layer.send_request(outgoing_request("BYE"), UDP_PEER, now=0.0)
    sent(layer)
    answer(layer, transaction.request, 100, now=0.2)
    assert run_until(layer, 9.0) == [0.5, 4.5, 8.5]
    answer(layer, transaction.request, 200, now=9.0)
    assert [e.response.status_code for e in events(layer)] == [100, 200]  # type: ignore[union-attr]
    assert transaction.state is TransactionState.COMPLETED
    assert layer.next_timer() == 14.0  # Timer K = T4
    answer(layer, transaction.request, 200, now=10.0)
    assert events(layer) == []  # absorbed in Completed
    layer.handle_timer(14.0)
    assert transaction.terminated


# -- server INVITE -----------------------------------------------------------


def receive_invite(
    layer: TransactionLayer, now: float = 0.0, **kwargs: object
) -> ServerTransaction:
    layer.receive_data(request_bytes(**kwargs), UDP_PEER, now)  # type: ignore[arg-type]
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    return event.transaction


def test_server_invite_sends_trying_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    transaction = receive_invite(layer)
    (trying,) = sent(layer)
    assert trying.startswith(b"SIP/2.0 100 Trying\r\n")
    layer.receive_data(request_bytes(), UDP_PEER, 0.5)
    assert sent(layer) == [trying] and events(layer) == []
    ringing = build_response(transaction.request, 180, to_tag="callee9")
    layer.send_response(transaction, ringing, now=1.0)
    ringing_bytes = sent(layer)[0]
    layer.receive_data(request_bytes(), UDP_PEER, 1.5)
    assert sent(layer) == [ringing_bytes]


def test_server_invite_failure_retransmits_until_ack_then_timer_i() -> None:
    layer = TransactionLayer()
    transaction = receive_invite(layer)
    sent(layer)
    layer.send_response(transaction, build_response(transaction.request, 486, to_tag="t9"), now=0.0)
    busy = sent(layer)[0]
    # Timer G: T1, 2T1, 4T1 capped at T2.
    assert run_until(layer, 8.0) == [0.5, 1.5, 3.5, 7.5]
    layer.receive_data(request_bytes(), UDP_PEER, 8.0)  # INVITE retransmission
    assert sent(layer) == [busy]
    layer.receive_data(request_bytes("ACK", to_tag="t9", cseq_method="ACK"), UDP_PEER, 8.1)
    assert transaction.state is TransactionState.CONFIRMED
    assert events(layer) == []  # the ACK for a non-2xx stays in the transaction
    assert layer.next_timer() == pytest.approx(13.1)  # Timer I = T4
    layer.receive_data(request_bytes("ACK", to_tag="t9", cseq_method="ACK"), UDP_PEER, 9.0)
    assert events(layer) == [] and sent(layer) == []
    layer.handle_timer(13.1)
    assert transaction.terminated


def test_server_invite_timer_h_without_ack() -> None:
    layer = TransactionLayer()
    transaction = receive_invite(layer)
    layer.send_response(transaction, build_response(transaction.request, 404, to_tag="t"), now=0.0)
    sends = run_until(layer, 40.0)
    assert sends[:5] == [0.5, 1.5, 3.5, 7.5, 11.5] and sends[-1] == 31.5
    (event,) = events(layer)
    assert isinstance(event, TransactionTimeout) and event.reason == "timer H: no ACK"


def test_server_invite_over_tcp_does_not_retransmit_responses() -> None:
    layer = TransactionLayer()
    layer.receive_data(request_bytes(), TCP_PEER, 0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    transaction = event.transaction
    layer.send_response(transaction, build_response(transaction.request, 486, to_tag="t"), now=0.0)
    sent(layer)
    assert layer.next_timer() == 32.0  # Timer H only
    ack = request_bytes("ACK", to_tag="t", cseq_method="ACK")
    layer.receive_data(ack, TCP_PEER, 1.0)
    assert transaction.terminated  # Timer I is 0 on reliable transports


def test_server_2xx_retransmitted_until_ack_for_2xx() -> None:
    layer = TransactionLayer()
    transaction = receive_invite(layer)
    sent(layer)
    layer.send_response(transaction, build_response(transaction.request, 200, to_tag="t7"), now=0.0)
    ok = sent(layer)[0]
    assert transaction.state is TransactionState.ACCEPTED
    assert run_until(layer, 4.0) == [0.5, 1.5, 3.5]
    # An INVITE retransmission in Accepted is absorbed (RFC 6026).
    layer.receive_data(request_bytes(), UDP_PEER, 4.0)
    assert sent(layer) == []
    # The ACK for a 2xx has its own branch; it is matched by Call-ID/CSeq/From tag.
    ack = request_bytes("ACK", branch="z9hG4bKack1", to_tag="t7", cseq_method="ACK")
    layer.receive_data(ack, UDP_PEER, 4.2)
    (event,) = events(layer)
    assert isinstance(event, AckReceived) and event.transaction is transaction
    assert run_until(layer, 31.0) == []  # no more 2xx retransmissions
    layer.handle_timer(32.0)  # Timer L
    assert transaction.terminated and events(layer) == []
    assert ok.startswith(b"SIP/2.0 200 OK")
    # After the transaction is gone the dialog layer has to match a late ACK.
    layer.receive_data(ack, UDP_PEER, 40.0)
    (late,) = events(layer)
    assert isinstance(late, AckReceived) and late.transaction is None


def test_pyvoip_ack_reusing_invite_branch_with_new_to_tag() -> None:
    layer = TransactionLayer()
    transaction = receive_invite(layer)
    layer.send_response(
        transaction, build_response(transaction.request, 200, to_tag="ours"), now=0.0
    )
    # pyVoIP: same branch as the INVITE and a To tag it made up.
    ack = request_bytes("ACK", branch="z9hG4bKinv1", to_tag="random-pyvoip", cseq_method="ACK")
    layer.receive_data(ack, UDP_PEER, 0.3)
    (event,) = events(layer)
    assert isinstance(event, AckReceived) and event.transaction is transaction
    assert transaction.ack_received
    # Same quirk with a fresh branch: still found through Call-ID/CSeq/From tag.
    layer2 = TransactionLayer()
    other = receive_invite(layer2)
    layer2.send_response(other, build_response(other.request, 200, to_tag="ours"), now=0.0)
    ack2 = request_bytes("ACK", branch="z9hG4bKfresh", to_tag="made-up", cseq_method="ACK")
    layer2.receive_data(ack2, UDP_PEER, 0.3)
    (event2,) = events(layer2)
    assert isinstance(event2, AckReceived) and event2.transaction is other


def test_missing_ack_for_2xx_reported_at_timer_l() -> None:
    layer = TransactionLayer()
    transaction = receive_invite(layer)
    layer.send_response(transaction, build_response(transaction.request, 200, to_tag="t"), now=0.0)
    sends = run_until(layer, 40.0)
    assert sends[:4] == [0.5, 1.5, 3.5, 7.5]
    assert all(b - a <= 4.0 for a, b in itertools.pairwise(sends))  # capped at T2
    (event,) = events(layer)
    assert isinstance(event, TransactionTimeout) and event.reason == "timer L: no ACK for 2xx"


def test_cannot_respond_twice_with_a_final() -> None:
    layer = TransactionLayer()
    transaction = receive_invite(layer)
    layer.send_response(transaction, build_response(transaction.request, 486, to_tag="t"), now=0.0)
    with pytest.raises(TransactionError):
        layer.send_response(
            transaction, build_response(transaction.request, 200, to_tag="t"), now=0.0
        )


# -- server non-INVITE -------------------------------------------------------


def test_non_invite_server_absorbs_then_resends_final_until_timer_j() -> None:
    layer = TransactionLayer()
    layer.receive_data(request_bytes("OPTIONS", branch="z9hG4bKopt"), UDP_PEER, 0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    transaction = event.transaction
    assert sent(layer) == []  # no automatic 100 for non-INVITE
    layer.receive_data(request_bytes("OPTIONS", branch="z9hG4bKopt"), UDP_PEER, 0.1)
    assert sent(layer) == [] and events(layer) == []  # absorbed in Trying
    layer.send_response(transaction, build_response(event.request, 200, to_tag="x"), now=0.2)
    ok = sent(layer)
    layer.receive_data(request_bytes("OPTIONS", branch="z9hG4bKopt"), UDP_PEER, 1.0)
    assert sent(layer) == ok
    assert layer.next_timer() == pytest.approx(32.2)  # Timer J
    layer.handle_timer(32.2)
    assert transaction.terminated
    layer.receive_data(request_bytes("OPTIONS", branch="z9hG4bKopt"), UDP_PEER, 33.0)
    assert isinstance(events(layer)[0], RequestReceived)  # a new transaction now


def test_rfc2543_matching_without_branch() -> None:
    layer = TransactionLayer()
    transaction = receive_invite(layer, branch=None)
    assert transaction.key[0] == "2543"
    sent(layer)
    layer.receive_data(request_bytes(branch=None), UDP_PEER, 0.5)
    assert len(sent(layer)) == 1 and events(layer) == []  # retransmission: 100 again
    layer.send_response(transaction, build_response(transaction.request, 480, to_tag="r1"), 1.0)
    sent(layer)
    layer.receive_data(
        request_bytes("ACK", branch=None, to_tag="r1", cseq_method="ACK"), UDP_PEER, 1.2
    )
    assert transaction.state is TransactionState.CONFIRMED
    # badbranch (RFC 4475 3.2.1): a branch that is only the magic cookie is not unique.
    layer.receive_data(request_bytes("OPTIONS", branch="z9hG4bK"), UDP_PEER, 2.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived) and event.transaction.key[0] == "2543"


def test_cancel_finds_the_invite_server_transaction() -> None:
    layer = TransactionLayer()
    invite = receive_invite(layer)
    layer.receive_data(request_bytes("CANCEL", cseq_method="CANCEL"), UDP_PEER, 1.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived) and event.transaction is not invite
    assert layer.find_invite_for_cancel(event.request) is invite
    other = parse_message(request_bytes("CANCEL", branch="z9hG4bKother", cseq_method="CANCEL"))
    assert isinstance(other, SipRequest)
    assert layer.find_invite_for_cancel(other) is None


def test_malformed_request_gets_400_and_an_event() -> None:
    layer = TransactionLayer()
    bad = request_bytes().replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE")
    layer.receive_data(bad, UDP_PEER, 0.0)
    (answer_bytes,) = sent(layer)
    assert answer_bytes.startswith(b"SIP/2.0 400 Bad Request - Invalid CSeq\r\n")
    (event,) = events(layer)
    assert isinstance(event, MalformedMessage) and event.answered
    layer.receive_data(b"SIP/2.0 200 OK\r\n\r\n", UDP_PEER, 0.0)
    (event,) = events(layer)
    assert isinstance(event, MalformedMessage) and not event.answered and sent(layer) == []


def test_one_next_timer_over_many_transactions_and_transport_error() -> None:
    layer = TransactionLayer()
    first = layer.send_request(outgoing_request(), UDP_PEER, now=0.0)
    second = layer.send_request(outgoing_request("OPTIONS"), UDP_PEER, now=0.2)
    assert layer.next_timer() == 0.5
    layer.transport_error(first)
    assert isinstance(events(layer)[0], TransactionTimeout) and first.terminated
    assert layer.next_timer() == pytest.approx(0.7)  # only the OPTIONS' Timer E remains
    assert len(layer) == 1 and not second.terminated
    with pytest.raises(TransactionError):
        layer.send_request(second.request, UDP_PEER, now=1.0)  # same branch
    ack = outgoing_request("ACK")
    with pytest.raises(TransactionError):
        layer.send_request(ack, UDP_PEER, now=1.0)


def test_many_concurrent_transactions_keep_their_own_timers() -> None:
    layer = TransactionLayer()
    transactions = [
        layer.send_request(outgoing_request(), UDP_PEER, now=i * 0.01) for i in range(200)
    ]
    for transaction in transactions[::2]:
        answer(layer, transaction.request, 180, now=0.3)
    sent(layer)
    events(layer)
    layer.handle_timer(40.0)
    timeouts = [e for e in events(layer) if isinstance(e, TransactionTimeout)]
    assert {id(e.transaction) for e in timeouts} == {id(t) for t in transactions[1::2]}


def test_received_and_rport_are_stamped_into_responses() -> None:
    layer = TransactionLayer()
    nat = Destination("UDP", "203.0.113.77", 40123)
    data = request_bytes("OPTIONS", branch="z9hG4bKnat").replace(
        b"branch=z9hG4bKnat", b"branch=z9hG4bKnat;rport"
    )
    layer.receive_data(data, nat, 0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    via = event.request.top_via
    assert (via.rport, via.received, via.branch) == (40123, "203.0.113.77", "z9hG4bKnat")
    layer.send_response(event.transaction, build_response(event.request, 200, to_tag="x"), 0.0)
    (out,) = layer.messages_to_send()
    assert out.destination == nat  # symmetric response routing
    response = parse_message(out.data)
    assert response.top_via.rport == 40123 and response.top_via.received == "203.0.113.77"
    # Without rport, received is added only when the address differs from sent-by.
    layer.receive_data(request_bytes("OPTIONS", branch="z9hG4bKplain"), nat, 1.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    assert event.request.top_via.received == "203.0.113.77"
    assert event.request.top_via.rport is None
    same = TransactionLayer()
    same.receive_data(request_bytes("OPTIONS", branch="z9hG4bKsame"), UDP_PEER, 1.0)
    (event,) = events(same)
    assert isinstance(event, RequestReceived) and event.request.top_via.received is None


def test_merged_request_is_flagged_for_482() -> None:
    layer = TransactionLayer()
    first = receive_invite(layer)
    # The same INVITE forked by a proxy and looped back: another branch, same
    # From tag, Call-ID and CSeq (RFC 3261 8.2.2.2).
    layer.receive_data(request_bytes(branch="z9hG4bKforked"), UDP_PEER, 0.1)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived) and event.merged_with is first
    assert event.transaction is not first
    # Once the first transaction is over, the same identifiers are no longer "merged".
    layer.send_response(first, build_response(first.request, 486, to_tag="t"), now=0.2)
    layer.send_response(event.transaction, build_response(event.request, 482, to_tag="u"), 0.2)
    layer.handle_timer(100.0)
    assert len(layer) == 0
    assert all(isinstance(e, TransactionTimeout) for e in events(layer))  # no ACKs came
    layer.receive_data(request_bytes(branch="z9hG4bKlater"), UDP_PEER, 101.0)
    (later,) = events(layer)
    assert isinstance(later, RequestReceived) and later.merged_with is None


def test_cancelled_invite_without_final_response_is_given_up() -> None:
    layer = TransactionLayer()
    invite = layer.send_request(outgoing_request(), UDP_PEER, now=0.0)
    answer(layer, invite.request, 180, now=0.1)
    assert layer.next_timer() is None  # Proceeding INVITE: no transaction timer at all
    cancel = layer.send_request(build_cancel(invite.request), UDP_PEER, now=5.0)
    answer(layer, cancel.request, 200, now=5.1)
    events(layer)
    layer.handle_timer(36.9)  # Timer K of the CANCEL (T4) has long fired
    assert cancel.terminated
    assert invite.state is TransactionState.PROCEEDING
    layer.handle_timer(37.0)  # 64*T1 after the CANCEL
    (event,) = events(layer)
    assert isinstance(event, TransactionTimeout) and event.transaction is invite
    assert invite.terminated and len(layer) == 0
