"""Property tests: any packet we can build round-trips, and no byte string makes a parser
fail with anything but RtpParseError (what the session counts as malformed)."""

from __future__ import annotations

import contextlib

from callmesh_media.rtp import (
    HeaderExtension,
    RtcpBye,
    RtcpReceiverReport,
    RtcpReportBlock,
    RtcpSenderReport,
    RtpPacket,
    RtpParseError,
    TelephoneEventReceiver,
    build_compound,
    parse_rtcp,
)
from callmesh_media.rtp.rtcp import RtcpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

rtp_packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=u16,
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrc=st.lists(u32, max_size=15),
    extension=st.none()
    | st.builds(
        HeaderExtension,
        profile=u16,
        data=st.integers(0, 8).map(lambda words: bytes(range(4 * words))),
    ),
    padding_size=st.integers(0, 255),
)

report_blocks = st.builds(
    RtcpReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    packets_lost=st.integers(-(1 << 23), (1 << 23) - 1),
    highest_sequence=u32,
    jitter=u32,
    last_sr=u32,
    delay_since_last_sr=u32,
)

rtcp_packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(
        RtcpSenderReport,
        ssrc=u32,
        ntp_timestamp=st.integers(0, 2**64 - 1),
        rtp_timestamp=u32,
        packet_count=u32,
        octet_count=u32,
        reports=st.lists(report_blocks, max_size=4),
    ),
    st.builds(RtcpReceiverReport, ssrc=u32, reports=st.lists(report_blocks, max_size=4)),
    st.builds(RtcpBye, sources=st.lists(u32, max_size=4), reason=st.binary(max_size=40)),
)


@settings(max_examples=300, deadline=None)
@given(rtp_packets)
def test_rtp_round_trip(packet: RtpPacket) -> None:
    assert RtpPacket.parse(bytes(packet)) == packet


@settings(max_examples=200, deadline=None)
@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_rtcp_compound_round_trip(packets: list[RtcpPacket]) -> None:
    data = build_compound(packets)
    assert build_compound(parse_rtcp(data)) == data


def _damage(data: bytes, cut: int, position: int, value: int) -> bytes:
    """Truncate, then overwrite one byte: the shapes real corruption takes."""
    damaged = bytearray(data[: max(0, len(data) - cut)])
    if damaged:
        damaged[position % len(damaged)] = value
    return bytes(damaged)


damaged_packets = st.one_of(
    st.binary(max_size=80),
    st.builds(_damage, rtp_packets.map(bytes), st.integers(0, 40), u16, st.integers(0, 255)),
    st.builds(
        _damage,
        st.lists(rtcp_packets, min_size=1, max_size=3).map(build_compound),
        st.integers(0, 40),
        u16,
        st.integers(0, 255),
    ),
)


@settings(max_examples=600, deadline=None)
@given(damaged_packets)
def test_parsers_fail_only_with_rtp_parse_error(data: bytes) -> None:
    for parse in (RtpPacket.parse, parse_rtcp):
        with contextlib.suppress(RtpParseError):
            parse(data)
    # The RFC 4733 receiver must survive any payload an RTP packet can carry.
    TelephoneEventReceiver().receive(RtpPacket(101, 0, 0, 1, data))
