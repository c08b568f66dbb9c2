"""`MediaControl` gRPC: a thin adapter that turns contract messages into :class:`MediaEngine`
calls and engine events into ``MediaEvent`` messages. Domain errors raised by the engine are
mapped to gRPC status codes by the shared interceptor (callmesh_core.grpc_server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from callmesh.common.v1 import common_pb2
from callmesh.media.v1 import media_pb2 as pb
from callmesh.media.v1 import media_pb2_grpc
from callmesh_core.errors import InvalidArgument
from google.protobuf.duration_pb2 import Duration

from callmesh_media.engine import DEFAULT_CODECS, EndpointOptions, MediaEngine
from callmesh_media.events import (
    DigitReceived,
    DigitsCollectedEvent,
    EndpointClosedEvent,
    EventBus,
    FaxToneEvent,
    LegStatsEvent,
    LegStatsSnapshot,
    MediaEventRecord,
    PlayFinished,
    RecordFinished,
    RtpTimeoutEvent,
)
from callmesh_media.sounds import (
    MusicSource,
    PromptSource,
    SayDigits,
    SayDuration,
    SayNumber,
    SilenceSource,
    SoundSource,
    ToneSource,
)

# The servicer never touches the context (errors are raised as domain errors).
Context = Any

_CODEC_NAMES = {common_pb2.CODEC_PCMU: "PCMU", common_pb2.CODEC_PCMA: "PCMA"}
_CODEC_ENUM = {"PCMU": common_pb2.CODEC_PCMU, "PCMA": common_pb2.CODEC_PCMA}
_PLAY_END = {
    "completed": pb.PLAY_END_COMPLETED,
    "stopped": pb.PLAY_END_STOPPED,
    "dtmf": pb.PLAY_END_DTMF,
    "max_duration": pb.PLAY_END_MAX_DURATION,
    "error": pb.PLAY_END_ERROR,
}
_COLLECT_END = {
    "max_digits": pb.COLLECT_END_MAX_DIGITS,
    "terminator": pb.COLLECT_END_TERMINATOR,
    "no_input": pb.COLLECT_END_NO_INPUT,
    "inter_digit_timeout": pb.COLLECT_END_INTER_DIGIT_TIMEOUT,
    "cancelled": pb.COLLECT_END_CANCELLED,
}
_RECORD_STATE = {
    "recording": pb.RECORD_STATE_RECORDING,
    "paused": pb.RECORD_STATE_PAUSED,
    "stopped": pb.RECORD_STATE_STOPPED,
}
_DTMF_SOURCE = {"rfc4733": pb.DTMF_SOURCE_RFC4733, "inband": pb.DTMF_SOURCE_INBAND}


def _seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _optional_seconds(message: object, field: str) -> float | None:
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    return _seconds(getattr(message, field))


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def options_from(message: pb.MediaOptions) -> EndpointOptions:
    names: list[str] = []
    for codec in message.codecs:
        if codec == common_pb2.CODEC_TELEPHONE_EVENT:
            continue
        name = _CODEC_NAMES.get(codec)
        if name is None:
            raise InvalidArgument(
                f"codec {common_pb2.Codec.Name(codec)} is not supported here (PCMU, PCMA)"
            )
        names.append(name)
    ptime = _optional_seconds(message, "ptime")
    return EndpointOptions(
        codecs=tuple(names) or DEFAULT_CODECS,
        telephone_event=message.telephone_event,
        inband_dtmf=message.inband_dtmf,
        detect_fax=message.detect_fax,
        rtp_timeout=_optional_seconds(message, "rtp_timeout"),
        ptime_ms=round(ptime * 1000) if ptime else 20,
        stats_interval=_optional_seconds(message, "stats_interval"),
    )


def source_from(item: common_pb2.MediaSource) -> SoundSource:
    kind = item.WhichOneof("source")
    if kind == "prompt":
        return PromptSource(item.prompt)
    if kind == "music_class":
        return MusicSource(item.music_class)
    if kind == "silence":
        return SilenceSource(_seconds(item.silence))
    if kind == "tone":
        tone = item.tone
        if not tone.frequencies_hz:
            raise InvalidArgument("tone needs at least one frequency")
        return ToneSource(
            frequencies=tuple(float(f) for f in tone.frequencies_hz),
            level_dbm0=float(tone.level_dbm0 or -13),
            on_seconds=_optional_seconds(tone, "on"),
            off_seconds=_optional_seconds(tone, "off"),
            total_seconds=_optional_seconds(tone, "total"),
        )
    if kind == "say":
        which = item.say.WhichOneof("value")
        if which == "number":
            return SayNumber(item.say.number)
        if which == "digits":
            return SayDigits(item.say.digits)
        if which == "duration":
            return SayDuration(_seconds(item.say.duration))
        raise InvalidArgument("say needs a number, digits or a duration")
    if kind == "url":
        raise InvalidArgument("playing from a URL is not supported by this media replica yet")
    raise InvalidArgument("a media source needs prompt, music_class, tone, silence or say")


def _target(target: pb.MediaTarget) -> tuple[str, str]:
    kind = target.WhichOneof("target")
    if kind == "endpoint_id":
        return "endpoint", target.endpoint_id
    if kind == "bridge_id":
        return "bridge", target.bridge_id
    if kind == "conference_id":
        return "conference", target.conference_id
    raise InvalidArgument("target needs endpoint_id, bridge_id or conference_id")


def leg_stats(stats: LegStatsSnapshot) -> pb.LegStats:
    message = pb.LegStats(
        packets_received=stats.packets_received,
        packets_sent=stats.packets_sent,
        packets_lost=stats.packets_lost,
        loss_fraction=stats.loss_fraction,
        jitter=_duration(stats.jitter_ms / 1000),
        mos=stats.mos,
        codec=_CODEC_ENUM.get(stats.codec or "", common_pb2.CODEC_UNSPECIFIED),
        bytes_received=stats.bytes_received,
        bytes_sent=stats.bytes_sent,
    )
    if stats.round_trip_ms is not None:
        message.round_trip.CopyFrom(_duration(stats.round_trip_ms / 1000))
    if stats.remote_loss_fraction is not None:
        message.remote_loss_fraction = stats.remote_loss_fraction
    if stats.remote_jitter_ms is not None:
        message.remote_jitter.CopyFrom(_duration(stats.remote_jitter_ms / 1000))
    return message


def event_message(record: MediaEventRecord) -> pb.MediaEvent:
    message = pb.MediaEvent(
        event_id=record.event_id,
        endpoint_id=record.endpoint_id,
        call_id=record.call_id,
        leg=record.leg,
    )
    message.occurred_at.FromNanoseconds(round(record.occurred_at * 1e9))
    payload = record.payload
    if isinstance(payload, DigitReceived):
        message.digit.CopyFrom(
            pb.Digit(
                digit=payload.digit,
                duration=_duration(payload.duration),
                source=_DTMF_SOURCE[payload.source],
            )
        )
    elif isinstance(payload, PlayFinished):
        message.play_done.CopyFrom(
            pb.PlayDone(
                play_id=payload.play_id,
                end=_PLAY_END[payload.end],
                digit=payload.digit,
                error=payload.error,
            )
        )
    elif isinstance(payload, DigitsCollectedEvent):
        message.digits_collected.CopyFrom(
            pb.DigitsCollected(
                collect_id=payload.collect_id,
                digits=payload.digits,
                terminator=payload.terminator,
                end=_COLLECT_END[payload.end],
            )
        )
    elif isinstance(payload, RecordFinished):
        message.record_done.CopyFrom(
            pb.RecordDone(
                recording_id=payload.recording_id,
                storage_uri=payload.storage_uri,
                duration=_duration(payload.duration),
                size_bytes=payload.size_bytes,
                channels=payload.channels,
                sample_rate_hz=payload.sample_rate_hz,
                error=payload.error,
            )
        )
    elif isinstance(payload, RtpTimeoutEvent):
        message.rtp_timeout.CopyFrom(pb.RtpTimeout(silent_for=_duration(payload.silent_for)))
    elif isinstance(payload, FaxToneEvent):
        kind = pb.FAX_TONE_KIND_CNG if payload.kind == "CNG" else pb.FAX_TONE_KIND_CED
        message.fax_tone.CopyFrom(pb.FaxTone(kind=kind))
    elif isinstance(payload, LegStatsEvent):
        message.leg_stats.CopyFrom(leg_stats(payload.stats))
    elif isinstance(payload, EndpointClosedEvent):
        message.endpoint_closed.CopyFrom(
            pb.EndpointClosed(reason=payload.reason, stats=leg_stats(payload.stats))
        )
    return message


class MediaControlServicer(media_pb2_grpc.MediaControlServicer):
    def __init__(self, engine: MediaEngine, bus: EventBus, replica_id: str) -> None:
        self.engine = engine
        self.bus = bus
        self.replica_id = replica_id

    async def CreateEndpoint(
        self, request: pb.CreateEndpointRequest, context: Context
    ) -> pb.CreateEndpointReply:
        which = request.WhichOneof("sdp")
        if which is None:
            raise InvalidArgument("CreateEndpoint needs remote_offer or create_offer")
        created = await self.engine.create_endpoint(
            call_id=request.call_id,
            leg=request.leg,
            tenant_id=request.tenant_id,
            owner=request.owner,
            remote_offer=request.remote_offer if which == "remote_offer" else None,
            options=options_from(request.options),
        )
        return pb.CreateEndpointReply(
            endpoint_id=created.endpoint_id,
            local_sdp=created.local_sdp,
            codec=_CODEC_ENUM.get(created.codec or "", common_pb2.CODEC_UNSPECIFIED),
            replica_id=self.replica_id,
        )

    async def UpdateEndpoint(
        self, request: pb.UpdateEndpointRequest, context: Context
    ) -> pb.UpdateEndpointReply:
        which = request.WhichOneof("sdp")
        updated = await self.engine.update_endpoint(
            request.endpoint_id,
            remote_answer=request.remote_answer if which == "remote_answer" else None,
            remote_offer=request.remote_offer if which == "remote_offer" else None,
        )
        return pb.UpdateEndpointReply(
            local_sdp=updated.local_sdp,
            codec=_CODEC_ENUM.get(updated.codec or "", common_pb2.CODEC_UNSPECIFIED),
            on_hold=updated.on_hold,
        )

    async def DestroyEndpoint(
        self, request: pb.DestroyEndpointRequest, context: Context
    ) -> pb.DestroyEndpointReply:
        stats = self.engine.destroy_endpoint(request.endpoint_id)
        return pb.DestroyEndpointReply(stats=leg_stats(stats))

    async def Bridge(self, request: pb.BridgeRequest, context: Context) -> pb.BridgeReply:
        bridge = self.engine.bridge(request.endpoint_a, request.endpoint_b)
        return pb.BridgeReply(bridge_id=bridge.bridge_id, transcoding=bridge.transcoding)

    async def Unbridge(self, request: pb.UnbridgeRequest, context: Context) -> pb.UnbridgeReply:
        self.engine.unbridge(request.bridge_id)
        return pb.UnbridgeReply()

    async def Play(self, request: pb.PlayRequest, context: Context) -> pb.PlayReply:
        kind, target_id = _target(request.target)
        play_id = await self.engine.play(
            kind=kind,
            target_id=target_id,
            sources=[source_from(item) for item in request.items],
            times=request.times,
            loop_forever=request.loop_forever,
            stop_on_dtmf=request.stop_on_dtmf,
            queue=request.mode == pb.PLAY_MODE_QUEUE,
            max_seconds=_optional_seconds(request, "max_duration"),
            language=request.language,
        )
        return pb.PlayReply(play_id=play_id)

    async def StopPlay(self, request: pb.StopPlayRequest, context: Context) -> pb.StopPlayReply:
        kind, target_id = _target(request.target)
        self.engine.stop_play(kind=kind, target_id=target_id, play_id=request.play_id)
        return pb.StopPlayReply()

    async def Record(self, request: pb.RecordRequest, context: Context) -> pb.RecordReply:
        if request.action == pb.RECORD_ACTION_START:
            kind, target_id = _target(request.target)
            recording_id = self.engine.record_start(
                kind=kind,
                target_id=target_id,
                recording_id=request.recording_id,
                stereo=request.stereo,
                storage_key=request.storage_key,
                max_seconds=_optional_seconds(request, "max_duration"),
            )
            return pb.RecordReply(recording_id=recording_id, state=pb.RECORD_STATE_RECORDING)
        actions = {
            pb.RECORD_ACTION_PAUSE: "pause",
            pb.RECORD_ACTION_RESUME: "resume",
            pb.RECORD_ACTION_STOP: "stop",
        }
        action = actions.get(request.action)
        if action is None:
            raise InvalidArgument("Record needs an action (START, PAUSE, RESUME or STOP)")
        state = self.engine.record_control(request.recording_id, action)
        return pb.RecordReply(recording_id=request.recording_id, state=_RECORD_STATE[state])

    async def CollectDigits(
        self, request: pb.CollectDigitsRequest, context: Context
    ) -> pb.CollectDigitsReply:
        collect_id = self.engine.collect_digits(
            request.endpoint_id,
            min_digits=request.min_digits,
            max_digits=request.max_digits,
            terminators=request.terminators,
            first_digit_timeout=_optional_seconds(request, "first_digit_timeout"),
            inter_digit_timeout=_optional_seconds(request, "inter_digit_timeout"),
            flush_buffer=request.flush_buffer,
        )
        return pb.CollectDigitsReply(collect_id=collect_id)

    async def CreateConference(
        self, request: pb.CreateConferenceRequest, context: Context
    ) -> pb.CreateConferenceReply:
        conference_id = self.engine.create_conference(
            request.tenant_id, request.name, request.max_participants
        )
        return pb.CreateConferenceReply(conference_id=conference_id, replica_id=self.replica_id)

    async def DestroyConference(
        self, request: pb.DestroyConferenceRequest, context: Context
    ) -> pb.DestroyConferenceReply:
        self.engine.destroy_conference(request.conference_id)
        return pb.DestroyConferenceReply()

    async def JoinConference(
        self, request: pb.JoinConferenceRequest, context: Context
    ) -> pb.JoinConferenceReply:
        count = self.engine.join_conference(
            request.conference_id,
            request.endpoint_id,
            muted=request.muted,
            listen_only=request.listen_only,
        )
        return pb.JoinConferenceReply(participants=count)

    async def LeaveConference(
        self, request: pb.LeaveConferenceRequest, context: Context
    ) -> pb.LeaveConferenceReply:
        count = self.engine.leave_conference(request.conference_id, request.endpoint_id)
        return pb.LeaveConferenceReply(participants=count)

    async def MuteParticipant(
        self, request: pb.MuteParticipantRequest, context: Context
    ) -> pb.ParticipantReply:
        self.engine.mute(request.conference_id, request.endpoint_id, request.muted)
        return pb.ParticipantReply()

    async def SetListenOnly(
        self, request: pb.SetListenOnlyRequest, context: Context
    ) -> pb.ParticipantReply:
        self.engine.set_listen_only(request.conference_id, request.endpoint_id, request.listen_only)
        return pb.ParticipantReply()

    async def Whisper(self, request: pb.WhisperRequest, context: Context) -> pb.ParticipantReply:
        self.engine.whisper(
            request.conference_id, request.endpoint_id, list(request.to_endpoint_ids)
        )
        return pb.ParticipantReply()

    async def GetLoad(self, request: pb.GetLoadRequest, context: Context) -> pb.GetLoadReply:
        load = self.engine.load()
        return pb.GetLoadReply(
            replica_id=self.replica_id,
            active_endpoints=load.active_endpoints,
            active_bridges=load.active_bridges,
            active_conferences=load.active_conferences,
            capacity_endpoints=load.capacity_endpoints,
            load=load.load,
            draining=load.draining,
        )

    async def Events(
        self, request: pb.EventsRequest, context: Context
    ) -> AsyncIterator[pb.MediaEvent]:
        subscription = self.bus.subscribe(request.owner)
        try:
            while True:
                record = await subscription.next()
                yield event_message(record)
        finally:
            subscription.close()
