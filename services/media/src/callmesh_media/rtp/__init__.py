"""Sans-I/O RTP core: packets, RTCP, legs, telephone-events and a jitter buffer."""

from callmesh_media.rtp.jitterbuffer import JitterBuffer, PlayoutFrame
from callmesh_media.rtp.learning import LearningPolicy, RemoteAddressLearner
from callmesh_media.rtp.packet import HeaderExtension, RtpPacket, RtpParseError, is_rtcp
from callmesh_media.rtp.rewriter import OutboundStreamRewriter
from callmesh_media.rtp.rtcp import (
    RtcpBye,
    RtcpReceiverReport,
    RtcpReportBlock,
    RtcpSenderReport,
    RtcpSourceDescription,
    RtcpUnknownPacket,
    SdesChunk,
    build_compound,
    parse_rtcp,
)
from callmesh_media.rtp.session import (
    LegStatistics,
    RemoteAddressLearned,
    RemoteReport,
    RemoteSaidBye,
    RemoteSsrcChanged,
    RtcpDue,
    RtpLeg,
    RtpTimedOut,
)
from callmesh_media.rtp.telephone_event import (
    TelephoneEventEnded,
    TelephoneEventPayload,
    TelephoneEventReceiver,
    TelephoneEventSender,
    TelephoneEventStarted,
)

__all__ = [
    "HeaderExtension",
    "JitterBuffer",
    "LearningPolicy",
    "LegStatistics",
    "OutboundStreamRewriter",
    "PlayoutFrame",
    "RemoteAddressLearned",
    "RemoteAddressLearner",
    "RemoteReport",
    "RemoteSaidBye",
    "RemoteSsrcChanged",
    "RtcpBye",
    "RtcpDue",
    "RtcpReceiverReport",
    "RtcpReportBlock",
    "RtcpSenderReport",
    "RtcpSourceDescription",
    "RtcpUnknownPacket",
    "RtpLeg",
    "RtpPacket",
    "RtpParseError",
    "RtpTimedOut",
    "SdesChunk",
    "TelephoneEventEnded",
    "TelephoneEventPayload",
    "TelephoneEventReceiver",
    "TelephoneEventSender",
    "TelephoneEventStarted",
    "build_compound",
    "is_rtcp",
    "parse_rtcp",
]
