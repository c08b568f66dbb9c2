from __future__ import annotations

import pytest
from callmesh_media.rtp import (
    RtcpBye,
    RtcpReceiverReport,
    RtcpReportBlock,
    RtcpSenderReport,
    RtcpSourceDescription,
    RtcpUnknownPacket,
    RtpParseError,
    SdesChunk,
    build_compound,
    parse_rtcp,
)
from callmesh_media.rtp.rtcp import RtcpPacket, SdesItemType, ntp_middle_32, ntp_timestamp

# A compound SR + SDES(CNAME) laid out by hand from RFC 3550 §6.4.1/§6.5, shaped like what a
# softphone sends: one report block, CNAME "alice@192.0.2.10".
SR_SDES_HEX = (
    # SR: V=2 RC=1 PT=200 length=12 words
    "81c8000c"
    "11223344"  # sender SSRC
    "e7a1b2c3"
    "80000000"  # NTP timestamp
    "000a0000"  # RTP timestamp
    "00000064"  # packet count 100
    "00003e80"  # octet count 16000
    # report block about SSRC 0x55667788
    "55667788"
    "19"
    "00000a"
    "0001fffe"
    "00000020"
    "b2c38000"
    "00008000"
    # SDES: V=2 SC=1 PT=202 length=6 words
    "81ca0006"
    "11223344"
    "0110" + b"alice@192.0.2.10".hex() + "0000"  # item, then null item + padding
)


def test_hand_built_sr_sdes_compound_parses_and_round_trips() -> None:
    data = bytes.fromhex(SR_SDES_HEX)
    sr, sdes = parse_rtcp(data)
    assert isinstance(sr, RtcpSenderReport)
    assert sr.ssrc == 0x11223344
    assert sr.ntp_timestamp == 0xE7A1B2C380000000
    assert (sr.packet_count, sr.octet_count) == (100, 16000)
    (block,) = sr.reports
    assert block.ssrc == 0x55667788
    assert block.fraction_lost == 0x19
    assert block.packets_lost == 10
    assert block.highest_sequence == 0x0001FFFE
    assert block.jitter == 32
    assert block.last_sr == 0xB2C38000
    assert block.delay_since_last_sr == 0x8000
    assert isinstance(sdes, RtcpSourceDescription)
    assert sdes.chunks[0].item(SdesItemType.CNAME) == b"alice@192.0.2.10"
    assert build_compound([sr, sdes]) == data


def test_every_packet_kind_round_trips_in_one_compound() -> None:
    blocks = [
        RtcpReportBlock(0xAAAA0001, 255, -3, 70000, 12, 0x01020304, 65536),
        RtcpReportBlock(0xAAAA0002, 0, (1 << 23) - 1, 1, 0, 0, 0),
    ]
    packets: list[RtcpPacket] = [
        RtcpReceiverReport(ssrc=7, reports=blocks),
        RtcpSourceDescription(
            [
                SdesChunk(7, [(SdesItemType.CNAME, b"x"), (SdesItemType.TOOL, b"callmesh")]),
                SdesChunk(8, []),
                SdesChunk(9, [(SdesItemType.NOTE, b"on hold")]),
            ]
        ),
        RtcpUnknownPacket(packet_type=204, count=1, body=b"\x00\x00\x00\x07name\x01\x02\x03\x04"),
        RtcpBye([7, 8], b"call ended"),
    ]
    data = build_compound(packets)
    assert len(data) % 4 == 0
    assert parse_rtcp(data) == packets
    assert build_compound(parse_rtcp(data)) == data


def test_negative_cumulative_loss_survives_24_bit_encoding() -> None:
    block = RtcpReportBlock(1, 0, -5, 10, 0, 0, 0)
    assert RtcpReportBlock.parse(bytes(block)).packets_lost == -5


def test_bye_without_reason_and_empty_rr() -> None:
    data = build_compound([RtcpReceiverReport(ssrc=1), RtcpBye([1])])
    assert data == bytes.fromhex("80c900010000000181cb000100000001")
    assert parse_rtcp(data) == [RtcpReceiverReport(ssrc=1), RtcpBye([1])]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x81\xc8", "shorter than its 4-byte header"),
        (bytes.fromhex("41c9000100000001"), "version 1"),
        (bytes.fromhex("81c9000700000001"), "declares 28 bytes"),
        (bytes.fromhex("81c9000100000001"), "report count 1 needs 24"),
        (bytes.fromhex("80c8000100000001"), "SR shorter than its sender info"),
        (bytes.fromhex("81ca00020000000101056162"), "item of 5 bytes is truncated"),
        (bytes.fromhex("81ca00020000000101026162"), "no terminating null"),
        (bytes.fromhex("82cb000100000001"), "BYE lists 2 sources"),
        (bytes.fromhex("80c9000100000001ff"), "trailing bytes"),
        (bytes.fromhex("80640001000000aa"), "not an RTCP type"),
        (bytes.fromhex("a0c9000100000000"), "padding count is invalid"),
    ],
)
def test_malformed_rtcp_raises_precise_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtpParseError, match=message):
        parse_rtcp(data)


def test_every_truncation_of_a_real_shaped_compound_fails_cleanly() -> None:
    data = bytes.fromhex(SR_SDES_HEX)
    for length in range(len(data)):
        if length in (0, 52):
            continue  # 52 bytes is exactly the SR alone, which is valid on its own
        with pytest.raises(RtpParseError):
            parse_rtcp(data[:length])
    assert len(parse_rtcp(data[:52])) == 1


def test_ntp_conversion() -> None:
    ntp = ntp_timestamp(0.5)  # Unix epoch + 0.5 s
    assert ntp >> 32 == 2_208_988_800
    assert ntp & 0xFFFFFFFF == 1 << 31
    assert ntp_middle_32(ntp) == ((2_208_988_800 & 0xFFFF) << 16) | 0x8000
