"""SDP parse/serialize and RFC 3264 offer/answer."""

from __future__ import annotations

import pytest
from callmesh_sip_edge.sip.errors import SdpError
from callmesh_sip_edge.sip.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Direction,
    answer_offer,
    create_offer,
    parse_sdp,
    read_answer,
)

PHONE_OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844527 IN IP4 198.51.100.7\r\n"
    b"s=call\r\n"
    b"i=a session\r\n"
    b"c=IN IP4 198.51.100.7\r\n"
    b"b=AS:64\r\n"
    b"t=0 0\r\n"
    b"a=tool:phone\r\n"
    b"m=audio 49170 RTP/AVP 9 8 0 96\r\n"
    b"a=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:96 telephone-event/8000\r\n"
    b"a=fmtp:96 0-15\r\n"
    b"a=ptime:30\r\n"
    b"a=sendrecv\r\n"
    b"m=video 51372 RTP/AVP 31\r\n"
    b"a=rtpmap:31 H261/90000\r\n"
)


def test_parse_fields() -> None:
    sdp = parse_sdp(PHONE_OFFER)
    assert sdp.origin.username == "alice" and sdp.origin.session_version == 2890844527
    assert sdp.session_name == "call"
    assert sdp.connection is not None and sdp.connection.address == "198.51.100.7"
    assert sdp.bandwidths == ["AS:64"] and sdp.attributes == [("tool", "phone")]
    audio, video = sdp.media
    assert (audio.media, audio.port, audio.protocol, audio.formats) == (
        "audio",
        49170,
        "RTP/AVP",
        ["9", "8", "0", "96"],
    )
    maps = audio.rtpmaps
    assert maps[0].encoding == "PCMU"  # static type without rtpmap line
    assert maps[96].encoding == "telephone-event" and audio.fmtp(96) == "0-15"
    assert audio.ptime == 30 and audio.direction is Direction.SENDRECV
    assert video.rtpmaps[31].clock_rate == 90000


def test_serialize_round_trip() -> None:
    sdp = parse_sdp(PHONE_OFFER)
    assert sdp.to_bytes() == PHONE_OFFER
    assert parse_sdp(sdp.to_bytes()) == sdp
    # Bare LF line ends are tolerated on input; output always uses CRLF.
    assert parse_sdp(PHONE_OFFER.replace(b"\r\n", b"\n")).to_bytes() == PHONE_OFFER


def test_answer_picks_first_common_codec_in_offer_order() -> None:
    answer = answer_offer(
        parse_sdp(PHONE_OFFER), local_address="203.0.113.5", local_port=30000, session_id="42"
    )
    audio = answer.audio
    assert audio is not None
    assert (audio.codec, audio.payload_type, audio.telephone_event_payload_type) == ("PCMA", 8, 96)
    assert (audio.remote_address, audio.remote_port, audio.ptime) == ("198.51.100.7", 49170, 30)
    assert audio.direction is Direction.SENDRECV
    text = answer.sdp.to_bytes().decode()
    assert "m=audio 30000 RTP/AVP 8 96\r\n" in text
    assert "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n" in text
    assert "m=video 0 RTP/AVP 31\r\n" in text  # rejected, but present (RFC 3264 6)
    assert "c=IN IP4 203.0.113.5\r\n" in text
    reparsed = parse_sdp(answer.sdp.to_bytes())
    assert len(reparsed.media) == 2


@pytest.mark.parametrize(
    ("offered", "local", "expected"),
    [
        (Direction.SENDONLY, Direction.SENDRECV, Direction.RECVONLY),  # they hold us
        (Direction.RECVONLY, Direction.SENDRECV, Direction.SENDONLY),
        (Direction.INACTIVE, Direction.SENDRECV, Direction.INACTIVE),
        (Direction.SENDRECV, Direction.SENDONLY, Direction.SENDONLY),  # we hold them
        (Direction.SENDONLY, Direction.SENDONLY, Direction.INACTIVE),
        (Direction.SENDRECV, Direction.SENDRECV, Direction.SENDRECV),
    ],
)
def test_answer_direction_for_hold(
    offered: Direction, local: Direction, expected: Direction
) -> None:
    body = PHONE_OFFER.replace(b"a=sendrecv", f"a={offered.value}".encode())
    answer = answer_offer(
        parse_sdp(body),
        local_address="203.0.113.5",
        local_port=30000,
        session_id="1",
        local_direction=local,
    )
    assert answer.audio is not None and answer.audio.direction is expected
    assert answer.sdp.media[0].direction is expected


def test_legacy_hold_address_means_sendonly() -> None:
    body = PHONE_OFFER.replace(b"c=IN IP4 198.51.100.7", b"c=IN IP4 0.0.0.0")
    answer = answer_offer(
        parse_sdp(body), local_address="203.0.113.5", local_port=1, session_id="1"
    )
    assert answer.audio is not None and answer.audio.direction is Direction.RECVONLY


def test_session_level_direction_applies_to_media() -> None:
    body = PHONE_OFFER.replace(b"a=sendrecv\r\n", b"").replace(
        b"a=tool:phone\r\n", b"a=tool:phone\r\na=inactive\r\n"
    )
    answer = answer_offer(
        parse_sdp(body), local_address="203.0.113.5", local_port=1, session_id="1"
    )
    assert answer.audio is not None and answer.audio.direction is Direction.INACTIVE


def test_no_common_codec_is_a_precise_error() -> None:
    body = PHONE_OFFER.replace(b"m=audio 49170 RTP/AVP 9 8 0 96", b"m=audio 49170 RTP/AVP 9 96")
    with pytest.raises(SdpError, match="no common audio codec"):
        answer_offer(parse_sdp(body), local_address="203.0.113.5", local_port=1, session_id="1")
    secure = PHONE_OFFER.replace(b"RTP/AVP 9 8 0 96", b"RTP/SAVP 9 8 0 96")
    with pytest.raises(SdpError, match="unsupported media protocol RTP/SAVP"):
        answer_offer(parse_sdp(secure), local_address="203.0.113.5", local_port=1, session_id="1")


def test_offer_and_read_answer() -> None:
    offer = create_offer(
        local_address="203.0.113.5",
        local_port=40000,
        session_id="9",
        codecs=(PCMU, PCMA, TELEPHONE_EVENT),
    )
    text = offer.to_bytes().decode()
    assert "m=audio 40000 RTP/AVP 0 8 101\r\n" in text and "a=fmtp:101 0-16\r\n" in text
    # The far end answers our offer with our own answer logic.
    answered = answer_offer(
        parse_sdp(offer.to_bytes()),
        local_address="192.0.2.20",
        local_port=5004,
        session_id="77",
        codecs=(PCMA, TELEPHONE_EVENT),
    )
    result = read_answer(offer, parse_sdp(answered.sdp.to_bytes()))
    assert (result.codec, result.payload_type, result.telephone_event_payload_type) == (
        "PCMA",
        8,
        101,
    )
    assert (result.remote_address, result.remote_port) == ("192.0.2.20", 5004)
    assert result.direction is Direction.SENDRECV


def test_read_answer_rejects_codec_not_offered() -> None:
    offer = create_offer(local_address="203.0.113.5", local_port=1, session_id="1", codecs=(PCMU,))
    bad = parse_sdp(
        b"v=0\r\no=x 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 5000 RTP/AVP 8\r\n"
    )
    with pytest.raises(SdpError, match="PCMA, which was not offered"):
        read_answer(offer, bad)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty SDP"),
        (b"v=1\r\n", "must start with v=0"),
        (b"v=0\r\ns=-\r\nt=0 0\r\n", "missing o="),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\nt=0 0\r\n", "missing s="),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\n", "missing t="),
        (b"v=0\r\no=a 1 x IN IP4 h\r\ns=-\r\nt=0 0\r\n", "line 2: invalid o="),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio x RTP/AVP 0\r\n", "invalid m= port"),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n", "no c= line"),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nc=IN IP9 h\r\nt=0 0\r\n", "line 4: invalid c="),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 300\r\n", "payload type"),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nxyz\r\n", "line 5: expected"),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nq=1\r\n", "unknown SDP line type"),
        (b"v=0\r\n\xff\r\n", "not UTF-8"),
    ],
)
def test_sdp_errors_name_the_problem(body: bytes, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        parse_sdp(body)


def test_bad_rtpmap_and_ptime() -> None:
    sdp = parse_sdp(PHONE_OFFER.replace(b"a=rtpmap:8 PCMA/8000", b"a=rtpmap:8 PCMA"))
    with pytest.raises(SdpError, match="rtpmap"):
        _ = sdp.media[0].rtpmaps
    sdp = parse_sdp(PHONE_OFFER.replace(b"a=ptime:30", b"a=ptime:abc"))
    with pytest.raises(SdpError, match="ptime"):
        _ = sdp.media[0].ptime
