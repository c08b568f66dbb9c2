from __future__ import annotations

import pytest
from callmesh_media.rtp import HeaderExtension, RtpPacket, RtpParseError, is_rtcp


def test_real_pcma_packets_parse_and_round_trip(sipp_pcma_packets: list[bytes]) -> None:
    first, second = (RtpPacket.parse(data) for data in sipp_pcma_packets)
    assert first.payload_type == 8
    assert first.marker is True
    assert len(first.payload) == 240  # 30 ms of PCMA
    assert second.sequence_number == (first.sequence_number + 1) % 65536
    assert second.timestamp - first.timestamp == 240
    assert second.ssrc == first.ssrc
    for data in sipp_pcma_packets:
        assert bytes(RtpPacket.parse(data)) == data


def test_csrc_extension_and_padding_round_trip() -> None:
    packet = RtpPacket(
        payload_type=0,
        sequence_number=65535,
        timestamp=0xFFFFFFF0,
        ssrc=0x11223344,
        payload=b"\xff" * 160,
        marker=True,
        csrc=[1, 2, 0xDEADBEEF],
        extension=HeaderExtension(profile=0xBEDE, data=b"\x10\xaa\x00\x00"),
        padding_size=4,
    )
    data = bytes(packet)
    assert len(data) == 12 + 12 + 4 + 4 + 160 + 4
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[-1] == 4
    parsed = RtpPacket.parse(data)
    assert parsed == packet
    assert bytes(parsed) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "shorter than the 12-byte header"),
        (bytes.fromhex("40000001000000000000000a"), "version 1 is not 2"),
        # CC=2 but only one CSRC present.
        (bytes.fromhex("82000001000000000000000a00000001"), "CSRC"),
        # X bit set, extension header cut short.
        (bytes.fromhex("90000001000000000000000abede"), "extension header"),
        # Extension says 2 words, only 1 present.
        (bytes.fromhex("90000001000000000000000abede000200000000"), "extension declares 8"),
        # Padding count 0.
        (bytes.fromhex("a0000001000000000000000a00"), "padding count is zero"),
        # Padding count larger than the packet body.
        (bytes.fromhex("a0000001000000000000000a0009"), "padding count 9"),
    ],
)
def test_malformed_packets_raise_precise_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtpParseError, match=message):
        RtpPacket.parse(data)


def test_truncating_a_real_packet_anywhere_in_the_header_is_an_error(
    sipp_pcma_packets: list[bytes],
) -> None:
    data = sipp_pcma_packets[0]
    for length in range(12):
        with pytest.raises(RtpParseError):
            RtpPacket.parse(data[:length])
    # Truncating the payload is not detectable at the RTP layer: it just parses shorter.
    assert len(RtpPacket.parse(data[:100]).payload) == 88


def test_serialising_rejects_too_many_csrcs() -> None:
    with pytest.raises(ValueError, match="CSRC"):
        bytes(RtpPacket(0, 1, 2, 3, csrc=list(range(16))))


def test_rtcp_demultiplexing_by_packet_type(sipp_pcma_packets: list[bytes]) -> None:
    assert not is_rtcp(sipp_pcma_packets[0])
    assert is_rtcp(bytes.fromhex("80c90001deadbeef"))  # an empty RR
    # PT 72..95 with the marker set would look like RTCP; RFC 5761 reserves them. PCMU does not.
    assert not is_rtcp(bytes(RtpPacket(0, 1, 2, 3, marker=True)))
