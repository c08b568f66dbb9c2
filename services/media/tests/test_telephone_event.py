from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from callmesh_media.rtp import (
    RtpPacket,
    RtpParseError,
    TelephoneEventEnded,
    TelephoneEventPayload,
    TelephoneEventReceiver,
    TelephoneEventSender,
    TelephoneEventStarted,
)
from callmesh_media.rtp.telephone_event import TelephoneEventNotice

SIPP_DTMF_FILES = {
    **{f"dtmf_2833_{d}.pcap": d for d in "0123456789"},
    "dtmf_2833_pound.pcap": "#",
    "dtmf_2833_star.pcap": "*",
}


def started_digits(notices: list[TelephoneEventNotice]) -> str:
    return "".join(n.digit or "?" for n in notices if isinstance(n, TelephoneEventStarted))


def feed(receiver: TelephoneEventReceiver, packets: list[RtpPacket]) -> list[TelephoneEventNotice]:
    notices: list[TelephoneEventNotice] = []
    for packet in packets:
        notices += receiver.receive(packet)
    return notices


def test_payload_round_trip_and_malformed() -> None:
    payload = TelephoneEventPayload(event=11, end=True, volume=10, duration=2240)
    assert bytes(payload) == bytes.fromhex("0b8a08c0")
    assert TelephoneEventPayload.parse(bytes(payload)) == payload
    with pytest.raises(RtpParseError, match="3 bytes"):
        TelephoneEventPayload.parse(b"\x01\x0a\x00")


def test_sipp_capture_with_triple_end_packets_gives_one_digit(
    sipp_dtmf_1_packets: list[tuple[float, bytes]],
) -> None:
    packets = [RtpPacket.parse(data) for _, data in sipp_dtmf_1_packets]
    assert packets[0].marker and packets[0].payload_type == 101
    notices = feed(TelephoneEventReceiver(), packets)
    assert notices == [
        TelephoneEventStarted(1, "1", packets[0].timestamp),
        TelephoneEventEnded(1, "1", packets[0].timestamp, 2240),
    ]


def test_all_sipp_dtmf_pcaps(sipp_pcap: Callable[[str], list[tuple[float, bytes]]]) -> None:
    for name, digit in SIPP_DTMF_FILES.items():
        packets = [RtpPacket.parse(data) for _, data in sipp_pcap(name)]
        notices = feed(TelephoneEventReceiver(), packets)
        assert started_digits(notices) == digit, name
        assert sum(isinstance(n, TelephoneEventEnded) for n in notices) == 1


def test_sender_produces_marker_updates_and_three_ends() -> None:
    sender = TelephoneEventSender(101, ssrc=7, interval=0.02, initial_sequence=65534)
    scheduled = sender.digit("#", duration=0.1, timestamp=2**32 - 100)
    packets = [s.packet for s in scheduled]
    payloads = [TelephoneEventPayload.parse(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True] + [False] * 7
    assert {p.timestamp for p in packets} == {2**32 - 100}
    assert [p.sequence_number for p in packets] == [65534, 65535, 0, 1, 2, 3, 4, 5]
    assert [pl.duration for pl in payloads] == [160, 320, 480, 640, 800, 800, 800, 800]
    assert [pl.end for pl in payloads] == [False] * 5 + [True] * 3
    assert {pl.event for pl in payloads} == {11}
    assert [s.send_offset for s in scheduled] == pytest.approx(
        [0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.1, 0.1]
    )


def test_every_digit_survives_reordering_duplication_and_loss() -> None:
    rng = random.Random(7)
    sender = TelephoneEventSender(101, ssrc=7, interval=0.05)
    receiver = TelephoneEventReceiver()
    notices: list[TelephoneEventNotice] = []
    digits = "0123456789*#ABCD" + "55"  # the same key twice in a row is two presses
    timestamp = 1000
    for digit in digits:
        packets = [s.packet for s in sender.digit(digit, 0.12, timestamp)]
        packets += rng.sample(packets, 3)  # network duplicates
        del packets[rng.randrange(len(packets))]  # and loses one (maybe the first)
        rng.shuffle(packets)  # and reorders within the press
        notices += feed(receiver, packets)
        timestamp += 1600  # 200 ms
    assert started_digits(notices) == digits
    ended = [n for n in notices if isinstance(n, TelephoneEventEnded)]
    assert [n.digit for n in ended] == list(digits)


def test_late_retransmission_of_a_previous_press_is_ignored() -> None:
    sender = TelephoneEventSender(101, ssrc=7)
    receiver = TelephoneEventReceiver()
    first = [s.packet for s in sender.digit("1", 0.1, 8000)]
    second = [s.packet for s in sender.digit("2", 0.1, 9600)]
    notices = feed(receiver, first + second[:2] + first[-1:] + second[2:])
    assert started_digits(notices) == "12"


def test_press_whose_end_packets_were_all_lost_is_closed_by_the_next() -> None:
    sender = TelephoneEventSender(101, ssrc=7)
    receiver = TelephoneEventReceiver()
    first = [s.packet for s in sender.digit("7", 0.1, 8000)][:-3]
    second = [s.packet for s in sender.digit("8", 0.1, 9600)]
    notices = feed(receiver, first + second)
    assert [type(n).__name__ for n in notices] == [
        "TelephoneEventStarted",
        "TelephoneEventEnded",
        "TelephoneEventStarted",
        "TelephoneEventEnded",
    ]
    assert started_digits(notices) == "78"


def test_long_press_split_into_segments_is_one_digit() -> None:
    def packet(ts: int, duration: int, end: bool, marker: bool = False) -> RtpPacket:
        payload = bytes(TelephoneEventPayload(5, end, 10, duration))
        return RtpPacket(101, 0, ts, 7, payload, marker=marker)

    receiver = TelephoneEventReceiver()
    notices = feed(
        receiver,
        [
            packet(0, 400, False, marker=True),
            packet(0, 65535, False),
            # RFC 4733 §2.5.1.3: next segment starts where the previous one's duration ended.
            packet(65535, 400, False),
            packet(65535, 1000, True),
        ],
    )
    assert started_digits(notices) == "5"
