"""The media engine: endpoints, bridges, playback, digits, recordings and conferences of one
replica, driven by the asyncio loop (sockets, a 20 ms tick, a housekeeping timer).

Domain object behind the ``MediaControl`` servicer: methods take plain values and raise
``callmesh_core.errors`` domain errors with precise messages; events go out on the
:class:`~callmesh_media.events.EventBus`. Decisions about packets live in the sans-I/O core
(``rtp/``, ``dsp/``, ``sdp``, ``collect``, ``playback``); this module only wires them to time and
sockets.

Two data paths:

* relay: a bridged endpoint's packets are re-stamped and sent to its peer as they arrive
  (see :mod:`callmesh_media.endpoint` for the fast path); PCMU<->PCMA is transcoded per packet
  with a 256-byte table, so transcoding adds no buffering delay;
* tick: every 20 ms, endpoints whose audio is needed (recording, conference, in-band DTMF, fax
  detection) pull one frame from their jitter buffer and decode it; playbacks and conference
  mixes are encoded and sent; recordings get their frames; collectors check their timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from callmesh_core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from callmesh_core.logging import EventLogger

from callmesh_media.collect import CollectResult, DigitCollector
from callmesh_media.dsp.dtmf import DtmfDetection, DtmfDigitEnded
from callmesh_media.dsp.g711 import codec_by_name
from callmesh_media.dsp.mixer import ConferenceRoom, MixLayout, build_layout, mix
from callmesh_media.endpoint import (
    FRAME,
    Endpoint,
    NoFreePort,
    PortAllocator,
    RelayDirection,
    RtcpProtocol,
)
from callmesh_media.events import (
    DigitReceived,
    DigitsCollectedEvent,
    EndpointClosedEvent,
    EventBus,
    EventPayload,
    FaxToneEvent,
    LegStatsEvent,
    LegStatsSnapshot,
    MediaEventRecord,
    PlayFinished,
    RecordFinished,
    RtpTimeoutEvent,
)
from callmesh_media.playback import Playback, PlayTarget
from callmesh_media.recording import RecordingError, WavRecording, storage_path
from callmesh_media.rtp import (
    LearningPolicy,
    RtcpDue,
    RtpLeg,
    RtpPacket,
    RtpTimedOut,
    TelephoneEventEnded,
    TelephoneEventStarted,
)
from callmesh_media.sdp import (
    AudioDescription,
    LocalAudio,
    SdpError,
    answer_direction,
    build_sdp,
    parse_audio,
)
from callmesh_media.sounds import SoundLibrary, SoundNotFound, SoundSource

TICK = 0.02
# Each endpoint's timers, RTCP and statistics are looked at every HOUSEKEEPING seconds, in
# HOUSEKEEPING_SLICES steps that each take a slice of the endpoints, so a replica with
# thousands of legs never stalls its loop (and the relayed packets) for one long sweep.
HOUSEKEEPING = 0.25
HOUSEKEEPING_SLICES = 5
TELEPHONE_EVENT_PAYLOAD_TYPE = 101
# A digit seen by both RFC 4733 and in-band detection within this window is one key press.
_DIGIT_DEDUP_SECONDS = 0.6
# An RFC 4733 press whose end packets were all lost is closed after this much silence.
_EVENT_END_TIMEOUT = 1.0
DEFAULT_CODECS = ("PCMU", "PCMA")


@dataclass(frozen=True, slots=True)
class EndpointOptions:
    codecs: tuple[str, ...] = DEFAULT_CODECS
    telephone_event: bool = True
    inband_dtmf: bool = False
    detect_fax: bool = False
    rtp_timeout: float | None = None  # None: the replica default
    ptime_ms: int = 20
    stats_interval: float | None = None


@dataclass(frozen=True, slots=True)
class EndpointCreated:
    endpoint_id: str
    local_sdp: str
    codec: str | None


@dataclass(frozen=True, slots=True)
class EndpointUpdated:
    local_sdp: str
    codec: str | None
    on_hold: bool


@dataclass(frozen=True, slots=True)
class Load:
    active_endpoints: int
    active_bridges: int
    active_conferences: int
    capacity_endpoints: int
    load: float
    draining: bool


@dataclass(slots=True)
class Bridge:
    bridge_id: str
    a: Endpoint
    b: Endpoint

    @property
    def transcoding(self) -> bool:
        return (
            self.a.codec is not None
            and self.b.codec is not None
            and self.a.codec.name != self.b.codec.name
        )


@dataclass(slots=True)
class Conference:
    conference_id: str
    tenant_id: str
    name: str
    max_participants: int
    room: ConferenceRoom
    members: dict[str, Endpoint]


@dataclass(slots=True)
class Recording:
    capture: WavRecording
    target: PlayTarget
    stereo: bool
    owner_endpoint: Endpoint | None
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    replica_id: str
    rtp_host: str
    advertised_address: str
    port_min: int
    port_max: int
    capacity_endpoints: int = 2000
    rtp_timeout: float | None = 30.0
    learning: LearningPolicy = field(default_factory=LearningPolicy)
    recording_dir: Path = Path(".local/media/recordings")


class MediaEngine:
    def __init__(
        self, config: EngineConfig, sounds: SoundLibrary, log: EventLogger, bus: EventBus
    ) -> None:
        self.config = config
        self.sounds = sounds
        self.log = log
        self.bus = bus
        self.ports = PortAllocator(config.rtp_host, config.port_min, config.port_max)
        self.endpoints: dict[str, Endpoint] = {}
        self.bridges: dict[str, Bridge] = {}
        self.conferences: dict[str, Conference] = {}
        self.recordings: dict[str, Recording] = {}
        self.play_queues: dict[PlayTarget, deque[Playback]] = {}
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._housekeeping_handle: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._layout: tuple[MixLayout, list[Endpoint]] | None = None
        self._load = 0.0
        self._sweep: list[Endpoint] = []
        # This tick's frame of the playback heard by each conference (filled by _play_tick).
        self._conference_prompts: dict[str, np.ndarray] = {}
        self._sweep_size = 0
        self._cpu_mark = (time.monotonic(), time.process_time())

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self._next_tick = now + TICK
        self._tick_handle = self._loop.call_at(self._next_tick, self._on_tick)
        self._housekeeping_handle = self._loop.call_at(
            now + HOUSEKEEPING / HOUSEKEEPING_SLICES, self._on_housekeeping
        )

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def drain(self) -> None:
        """Refuse new endpoints (UNAVAILABLE) and return once the existing ones have ended."""
        self.draining = True
        # The runner logs `draining` already; how many endpoints it waits for is detail.
        self.log.debug("media_draining", endpoints=len(self.endpoints))
        await self._idle.wait()

    async def close(self) -> None:
        """Release everything that is left (the drain grace ran out, or the process stops)."""
        for endpoint_id in list(self.endpoints):
            self._destroy(self.endpoints[endpoint_id], reason="replica-draining-deadline")
        for conference_id in list(self.conferences):
            self.destroy_conference(conference_id)
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._housekeeping_handle is not None:
            self._housekeeping_handle.cancel()

    def load(self) -> Load:
        return Load(
            active_endpoints=len(self.endpoints),
            active_bridges=len(self.bridges),
            active_conferences=len(self.conferences),
            capacity_endpoints=self.config.capacity_endpoints,
            load=self._load,
            draining=self.draining,
        )

    # -- events ----------------------------------------------------------------------------

    def _emit(self, payload: EventPayload, endpoint: Endpoint | None = None) -> None:
        if endpoint is None:
            self.bus.publish(MediaEventRecord(payload))
        else:
            self.bus.publish(
                MediaEventRecord(
                    payload,
                    owner=endpoint.owner,
                    endpoint_id=endpoint.endpoint_id,
                    call_id=endpoint.call_id,
                    leg=endpoint.leg_label,
                )
            )

    # -- endpoints -------------------------------------------------------------------------

    def endpoint(self, endpoint_id: str) -> Endpoint:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise NotFound(f"endpoint {endpoint_id!r} does not exist on this replica")
        return endpoint

    async def create_endpoint(
        self,
        *,
        call_id: str,
        leg: str,
        tenant_id: str,
        owner: str,
        remote_offer: str | None,
        options: EndpointOptions,
    ) -> EndpointCreated:
        if self.draining:
            raise Unavailable("media replica is draining and takes no new endpoints")
        allowed = self._allowed_codecs(options.codecs)
        remote = None
        if remote_offer is not None:
            try:
                remote = parse_audio(remote_offer)
            except SdpError as exc:
                raise InvalidArgument(f"remote_offer: {exc}") from None
        with_rtcp = remote is None or not remote.rtcp_mux
        try:
            rtp_sock, rtcp_sock = self.ports.allocate(with_rtcp)
        except NoFreePort as exc:
            raise ResourceExhausted(str(exc)) from None
        port = rtp_sock.getsockname()[1]
        now = self._now()
        timeout = (
            options.rtp_timeout if options.rtp_timeout is not None else self.config.rtp_timeout
        )
        rtp_leg = RtpLeg(
            local_ssrc=self._rng.getrandbits(32) or 1,
            signalled_address=(remote.address, remote.port) if remote else ("0.0.0.0", 0),
            now=now,
            cname=f"callmesh-{self.config.replica_id}",
            learning=self.config.learning,
            inactivity_timeout=timeout or None,
            rng=self._rng,
            initial_sequence=self._rng.getrandbits(16),
            initial_timestamp=self._rng.getrandbits(32),
        )
        endpoint = Endpoint(
            endpoint_id="ep-" + uuid.uuid4().hex,
            call_id=call_id,
            leg_label=leg,
            tenant_id=tenant_id,
            owner=owner,
            leg=rtp_leg,
            local_port=port,
            clock=self._now,
            on_slow_packet=self._on_packet,
        )
        endpoint.rtp_timeout = timeout or None
        endpoint.inband_dtmf = options.inband_dtmf
        endpoint.detect_fax = options.detect_fax
        endpoint.stats_interval = options.stats_interval
        if options.stats_interval:
            endpoint.next_stats_at = now + options.stats_interval
        endpoint.sdp_session_id = self._rng.getrandbits(40)
        endpoint.telephone_event_payload_type = (
            TELEPHONE_EVENT_PAYLOAD_TYPE if options.telephone_event else None
        )
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: endpoint, sock=rtp_sock)
            if rtcp_sock is not None:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: RtcpProtocol(endpoint, self._now), sock=rtcp_sock
                )
                endpoint.rtcp_transport = transport
        except BaseException:
            endpoint.close_sockets()
            self.ports.release(port)
            raise
        try:
            if remote is not None:
                sdp = self._answer(endpoint, remote, allowed, options)
            else:
                sdp = self._offer(endpoint, allowed, options)
        except InvalidArgument:
            endpoint.close_sockets()
            self.ports.release(port)
            raise
        self.endpoints[endpoint.endpoint_id] = endpoint
        self._idle.clear()
        self._apply_timeout(endpoint)
        endpoint.ensure_decoding()
        self.log.info(
            "endpoint_created",
            endpoint_id=endpoint.endpoint_id,
            call_id=call_id,
            leg=leg,
            port=port,
            codec=endpoint.codec.name if endpoint.codec else "-",
        )
        return EndpointCreated(
            endpoint.endpoint_id, sdp, endpoint.codec.name if endpoint.codec else None
        )

    @staticmethod
    def _allowed_codecs(names: Iterable[str]) -> tuple[str, ...]:
        allowed = tuple(dict.fromkeys(name.upper() for name in names)) or DEFAULT_CODECS
        unsupported = [name for name in allowed if codec_by_name(name) is None]
        if unsupported:
            raise InvalidArgument(
                f"codec {', '.join(unsupported)} is not supported here (PCMU, PCMA)"
            )
        return allowed

    def _local_audio(
        self, endpoint: Endpoint, codecs: tuple[tuple[int, str], ...], direction: str, ptime: int
    ) -> LocalAudio:
        return LocalAudio(
            address=self.config.advertised_address,
            port=endpoint.local_port,
            codecs=codecs,
            telephone_event_payload_type=endpoint.telephone_event_payload_type,
            ptime_ms=ptime,
            direction=direction,
            rtcp_mux=endpoint.rtcp_mux,
        )

    def _offer(self, endpoint: Endpoint, allowed: tuple[str, ...], options: EndpointOptions) -> str:
        codecs = tuple((codec_by_name(name).payload_type, name) for name in allowed)  # type: ignore[union-attr]
        endpoint.offered = codecs
        endpoint.offer_pending = True
        # We offer RTCP multiplexing and keep port+1 open in case the answer declines it.
        endpoint.rtcp_mux = True
        local = self._local_audio(endpoint, codecs, "sendrecv", options.ptime_ms)
        endpoint.rtcp_mux = False
        return self._render(endpoint, local, mux_offered=True)

    def _render(self, endpoint: Endpoint, local: LocalAudio, *, mux_offered: bool = False) -> str:
        endpoint.sdp_version += 1
        if mux_offered:
            local = LocalAudio(
                local.address,
                local.port,
                local.codecs,
                local.telephone_event_payload_type,
                local.ptime_ms,
                local.direction,
                True,
            )
        return build_sdp(local, session_id=endpoint.sdp_session_id, version=endpoint.sdp_version)

    def _answer(
        self,
        endpoint: Endpoint,
        remote: AudioDescription,
        allowed: tuple[str, ...],
        options: EndpointOptions,
    ) -> str:
        chosen: tuple[int, str] | None = None
        for payload_type in remote.payload_types:
            encoding = remote.encoding(payload_type)
            if encoding is not None and encoding[1] == 8000 and encoding[0] in allowed:
                chosen = (payload_type, encoding[0])
                break
        if chosen is None:
            offered = [
                "/".join(map(str, remote.encoding(pt) or (pt,))) for pt in remote.payload_types
            ]
            raise InvalidArgument(
                f"SDP offer has no codec in common: offered {', '.join(offered) or 'nothing'}; "
                f"accepted {', '.join(allowed)}"
            )
        remote_te = remote.payload_type_of("telephone-event")
        if options.telephone_event and remote_te is not None:
            endpoint.telephone_event_payload_type = remote_te
            endpoint.remote_te_payload_type = remote_te
        else:
            endpoint.telephone_event_payload_type = None
            endpoint.remote_te_payload_type = None
        self._apply_remote(endpoint, remote, chosen)
        endpoint.rtcp_mux = remote.rtcp_mux
        endpoint.local_direction = answer_direction(remote.direction)
        # ptime is what we prefer to receive; our own packets are 20 ms whatever the far end
        # prefers (RFC 3264 leaves that to the sender).
        local = self._local_audio(endpoint, (chosen,), endpoint.local_direction, options.ptime_ms)
        return self._render(endpoint, local)

    def _apply_remote(
        self, endpoint: Endpoint, remote: AudioDescription, chosen: tuple[int, str]
    ) -> None:
        codec = codec_by_name(chosen[1])
        assert codec is not None
        previous = endpoint.remote
        endpoint.remote = remote
        endpoint.codec = codec
        endpoint.receive_payload_type = chosen[0]
        endpoint.send_payload_type = chosen[0]
        endpoint.offer_pending = False
        if previous is None or (previous.address, previous.port) != (remote.address, remote.port):
            endpoint.leg.resignal((remote.address, remote.port))

    async def update_endpoint(
        self, endpoint_id: str, *, remote_answer: str | None, remote_offer: str | None
    ) -> EndpointUpdated:
        endpoint = self.endpoint(endpoint_id)
        text = remote_answer if remote_answer is not None else remote_offer
        what = "remote_answer" if remote_answer is not None else "remote_offer"
        if text is None:
            raise InvalidArgument("UpdateEndpoint needs remote_answer or remote_offer")
        try:
            remote = parse_audio(text)
        except SdpError as exc:
            raise InvalidArgument(f"{what}: {exc}") from None
        self._detach_relays(endpoint)
        local_sdp = ""
        if remote_answer is not None:
            if not endpoint.offer_pending:
                raise FailedPrecondition(
                    f"endpoint {endpoint_id!r} has no pending offer to apply an answer to"
                )
            offered = {pt: name for pt, name in endpoint.offered}
            chosen = None
            for payload_type in remote.payload_types:
                encoding = remote.encoding(payload_type)
                if encoding is not None and encoding[0] in offered.values():
                    chosen = (payload_type, encoding[0])
                    break
            if chosen is None:
                raise InvalidArgument(
                    "remote_answer: SDP answer accepts none of the offered codecs "
                    f"({', '.join(offered.values())})"
                )
            remote_te = remote.payload_type_of("telephone-event")
            if endpoint.telephone_event_payload_type is None or remote_te is None:
                endpoint.telephone_event_payload_type = None
                endpoint.remote_te_payload_type = None
            else:
                endpoint.remote_te_payload_type = remote_te
            self._apply_remote(endpoint, remote, chosen)
            if remote.rtcp_mux:
                endpoint.rtcp_mux = True
                if endpoint.rtcp_transport is not None:
                    endpoint.rtcp_transport.close()
                    endpoint.rtcp_transport = None
        else:
            codec_names = [endpoint.codec.name] if endpoint.codec else []
            allowed = tuple(dict.fromkeys([*codec_names, *DEFAULT_CODECS]))
            options = EndpointOptions(
                codecs=allowed, telephone_event=endpoint.telephone_event_payload_type is not None
            )
            if remote.rtcp_mux is False and endpoint.rtcp_mux and endpoint.rtcp_transport is None:
                raise InvalidArgument(
                    "remote_offer: RTCP multiplexing cannot be turned off on an existing stream"
                )
            local_sdp = self._answer(endpoint, remote, allowed, options)
        self._refresh(endpoint)
        self._apply_timeout(endpoint)
        assert endpoint.codec is not None
        return EndpointUpdated(local_sdp, endpoint.codec.name, remote.on_hold)

    def _apply_timeout(self, endpoint: Endpoint) -> None:
        """No RTP timeout while the far end says it sends nothing (hold with inactive/recvonly)."""
        # An outgoing leg waiting for its answer (no remote yet) is silent by design, too.
        sends = endpoint.remote is not None and endpoint.remote.sends
        wanted = endpoint.rtp_timeout if sends else None
        if wanted is not None and endpoint.leg.inactivity_timeout is None:
            endpoint.leg.note_relayed(self._now())  # the silence so far does not count
        endpoint.leg.inactivity_timeout = wanted

    def destroy_endpoint(self, endpoint_id: str) -> LegStatsSnapshot:
        endpoint = self.endpoint(endpoint_id)
        return self._destroy(endpoint, reason="")

    def _destroy(self, endpoint: Endpoint, *, reason: str) -> LegStatsSnapshot:
        if endpoint.bridge_id is not None:
            self._unbridge(self.bridges[endpoint.bridge_id])
        if endpoint.conference_id is not None:
            conference = self.conferences.get(endpoint.conference_id)
            if conference is not None:
                self._leave(conference, endpoint)
        for target in [t for t in self.play_queues if self._feeds(t, endpoint)]:
            if target.kind == "endpoint":
                self._stop_queue(target, "stopped")
        for recording_id, recording in list(self.recordings.items()):
            if endpoint in recording.endpoints:
                self._finish_recording(recording_id)
        if endpoint.collector is not None:
            self._finish_collect(endpoint, endpoint.collector.cancel())
        self._flush_endpoint(endpoint, self._now())
        stats = self._snapshot(endpoint)
        with contextlib.suppress(Exception):
            endpoint.send_rtcp(endpoint.leg.build_bye("hangup"))
        endpoint.close_sockets()
        self.ports.release(endpoint.local_port)
        del self.endpoints[endpoint.endpoint_id]
        if reason:
            self._emit(EndpointClosedEvent(reason, stats), endpoint)
        if not self.endpoints:
            self._idle.set()
        self.log.info(
            "endpoint_destroyed",
            endpoint_id=endpoint.endpoint_id,
            call_id=endpoint.call_id,
            received=stats.packets_received,
            sent=stats.packets_sent,
            lost=stats.packets_lost,
            reason=reason or "requested",
        )
        return stats

    def _snapshot(self, endpoint: Endpoint) -> LegStatsSnapshot:
        stats = endpoint.leg.statistics()
        return LegStatsSnapshot(
            packets_received=stats.packets_received,
            packets_sent=stats.packets_sent,
            packets_lost=stats.packets_lost,
            loss_fraction=stats.loss_fraction,
            jitter_ms=stats.jitter_ms,
            round_trip_ms=None if stats.round_trip_time is None else 1000 * stats.round_trip_time,
            mos=stats.quality.mos,
            remote_loss_fraction=stats.remote_fraction_lost,
            remote_jitter_ms=stats.remote_jitter_ms,
            codec=endpoint.codec.name if endpoint.codec else None,
            bytes_received=endpoint.bytes_received,
            bytes_sent=stats.octets_sent,
        )

    # -- bridges ---------------------------------------------------------------------------

    def bridge(self, endpoint_a: str, endpoint_b: str) -> Bridge:
        a = self.endpoint(endpoint_a)
        b = self.endpoint(endpoint_b)
        if a is b:
            raise InvalidArgument("cannot bridge an endpoint with itself")
        for endpoint in (a, b):
            if endpoint.bridge_id is not None:
                raise FailedPrecondition(
                    f"endpoint {endpoint.endpoint_id!r} is already in bridge {endpoint.bridge_id!r}"
                )
            if endpoint.conference_id is not None:
                raise FailedPrecondition(
                    f"endpoint {endpoint.endpoint_id!r} is in conference "
                    f"{endpoint.conference_id!r}; leave it first"
                )
        bridge = Bridge("br-" + uuid.uuid4().hex, a, b)
        self.bridges[bridge.bridge_id] = bridge
        a.bridge_id = b.bridge_id = bridge.bridge_id
        a.peer, b.peer = b, a
        self._refresh(a)
        self._refresh(b)
        self.log.info(
            "bridged",
            bridge_id=bridge.bridge_id,
            endpoint_a=a.endpoint_id,
            endpoint_b=b.endpoint_id,
            transcoding=bridge.transcoding,
        )
        return bridge

    def unbridge(self, bridge_id: str) -> None:
        bridge = self.bridges.get(bridge_id)
        if bridge is None:
            raise NotFound(f"bridge {bridge_id!r} does not exist on this replica")
        self._unbridge(bridge)

    def _unbridge(self, bridge: Bridge) -> None:
        target = PlayTarget("bridge", bridge.bridge_id)
        if target in self.play_queues:
            self._stop_queue(target, "stopped")
        for recording_id, recording in list(self.recordings.items()):
            if recording.target == target:
                self._finish_recording(recording_id)
        for endpoint in (bridge.a, bridge.b):
            self._detach_relays(endpoint)
            endpoint.bridge_id = None
            endpoint.peer = None
        del self.bridges[bridge.bridge_id]
        self._refresh(bridge.a)
        self._refresh(bridge.b)

    def _detach_relays(self, endpoint: Endpoint) -> None:
        """Stop relaying into and out of ``endpoint`` (it is about to change)."""
        if endpoint.relay is not None:
            endpoint.relay.detach()
            endpoint.relay = None
        peer = endpoint.peer
        if peer is not None and peer.relay is not None:
            peer.relay.detach()
            peer.relay = None
        endpoint.fast_source = None
        if peer is not None:
            peer.fast_source = None

    def _refresh(self, endpoint: Endpoint) -> None:
        """Recompute where this endpoint's audio goes and what the peer's goes to."""
        for source in (endpoint, endpoint.peer):
            if source is None:
                continue
            target = source.peer
            wanted = (
                target is not None
                and source.codec is not None
                and target.codec is not None
                and target.playing == 0
                and target.far_end_receives
                and source.conference_id is None
            )
            if wanted and source.relay is None:
                assert target is not None
                source.relay = RelayDirection(target, source)
            elif not wanted and source.relay is not None:
                source.relay.detach()
                source.relay = None
            source.ensure_decoding()

    # -- packets (slow path) ---------------------------------------------------------------

    def _on_packet(self, endpoint: Endpoint, packet: RtpPacket, now: float) -> None:
        payload_type = packet.payload_type
        if payload_type == endpoint.remote_te_payload_type and payload_type is not None:
            self._on_telephone_event(endpoint, packet, now)
            if endpoint.relay is not None:
                endpoint.relay.forward(packet, now)
        elif payload_type == endpoint.receive_payload_type:
            if endpoint.jitter is not None:
                endpoint.jitter.push(packet, now)
            if endpoint.relay is not None:
                endpoint.relay.forward(packet, now)
        endpoint.refresh_fast_path()

    def _on_telephone_event(self, endpoint: Endpoint, packet: RtpPacket, now: float) -> None:
        for notice in endpoint.telephone_events.receive(packet):
            if isinstance(notice, TelephoneEventStarted) and notice.digit is not None:
                endpoint.pending_event = (notice.digit, notice.timestamp, now, now)
                self._barge_in(endpoint, notice.digit)
            elif isinstance(notice, TelephoneEventEnded) and notice.digit is not None:
                endpoint.pending_event = None
                if notice.timestamp in endpoint.closed_events:
                    continue  # already reported when its end packets were overdue
                self._digit(endpoint, notice.digit, notice.duration / 8000, "rfc4733", now)
        if endpoint.pending_event is not None:
            digit, timestamp, started, _ = endpoint.pending_event
            endpoint.pending_event = (digit, timestamp, started, now)

    def _digit(
        self, endpoint: Endpoint, digit: str, duration: float, source: str, now: float
    ) -> None:
        for previous, previous_source, at in endpoint.recent_digits:
            if previous == digit and previous_source != source and now - at < _DIGIT_DEDUP_SECONDS:
                return  # the same key press seen by the other detector
        endpoint.recent_digits.append((digit, source, now))
        self._emit(DigitReceived(digit, duration, source), endpoint)
        self._barge_in(endpoint, digit)
        if endpoint.collector is not None:
            result = endpoint.collector.feed(digit, now)
            if result is not None:
                self._finish_collect(endpoint, result)
        else:
            endpoint.typeahead.append(digit)

    # -- playback --------------------------------------------------------------------------

    def _target(self, kind: str, target_id: str) -> PlayTarget:
        if kind == "endpoint":
            self.endpoint(target_id)
        elif kind == "bridge":
            if target_id not in self.bridges:
                raise NotFound(f"bridge {target_id!r} does not exist on this replica")
        elif kind == "conference":
            if target_id not in self.conferences:
                raise NotFound(f"conference {target_id!r} does not exist on this replica")
        else:
            raise InvalidArgument("a media target (endpoint, bridge or conference) is required")
        return PlayTarget(kind, target_id)

    def _sinks(self, target: PlayTarget) -> list[Endpoint]:
        if target.kind == "endpoint":
            endpoint = self.endpoints.get(target.target_id)
            return [endpoint] if endpoint is not None else []
        if target.kind == "bridge":
            bridge = self.bridges.get(target.target_id)
            return [bridge.a, bridge.b] if bridge is not None else []
        return []  # conference playbacks are mixed, not sent directly

    def _feeds(self, target: PlayTarget, endpoint: Endpoint) -> bool:
        return endpoint in self._sinks(target)

    async def play(
        self,
        *,
        kind: str,
        target_id: str,
        sources: list[SoundSource],
        times: int,
        loop_forever: bool,
        stop_on_dtmf: bool,
        queue: bool,
        max_seconds: float | None,
        language: str,
    ) -> str:
        target = self._target(kind, target_id)
        if not sources:
            raise InvalidArgument("Play needs at least one item")
        tenant_id = ""
        sinks = self._sinks(target)
        if sinks:
            tenant_id = sinks[0].tenant_id
        elif target.kind == "conference":
            tenant_id = self.conferences[target.target_id].tenant_id
        error = ""
        try:
            segments = await asyncio.to_thread(
                self.sounds.resolve, sources, language=language, tenant_id=tenant_id
            )
        except SoundNotFound as exc:
            segments, error = [], str(exc)
        except (OSError, EOFError, ValueError) as exc:
            segments, error = [], f"unreadable:{type(exc).__name__}"
        # The target may have gone while files were read.
        self._target(kind, target_id)
        playback = Playback(
            "pl-" + uuid.uuid4().hex,
            target,
            segments,
            times=times,
            loop_forever=loop_forever,
            stop_on_dtmf=stop_on_dtmf,
            max_seconds=max_seconds,
            error=error,
        )
        if error:
            self._emit_play_done(playback, "error", error=error)
            return playback.play_id
        if not queue:
            self._stop_queue(target, "stopped")
        entries = self.play_queues.setdefault(target, deque())
        entries.append(playback)
        if len(entries) == 1:
            self._activate(playback)
        return playback.play_id

    def _activate(self, playback: Playback) -> None:
        for endpoint in self._sinks(playback.target):
            endpoint.playing += 1
            if endpoint.peer is not None:
                self._refresh(endpoint)
            endpoint.leg.switch_source()

    def _deactivate(self, playback: Playback) -> None:
        for endpoint in self._sinks(playback.target):
            endpoint.playing = max(0, endpoint.playing - 1)
            endpoint.leg.switch_source()
            self._refresh(endpoint)

    def _emit_play_done(
        self, playback: Playback, end: str, *, digit: str = "", error: str = ""
    ) -> None:
        sinks = self._sinks(playback.target)
        self._emit(PlayFinished(playback.play_id, end, digit, error), sinks[0] if sinks else None)

    def _end_playback(self, playback: Playback, end: str, digit: str = "") -> None:
        """End the head of its queue and start the next one."""
        entries = self.play_queues.get(playback.target)
        if not entries or entries[0] is not playback:
            return
        entries.popleft()
        self._deactivate(playback)
        self._emit_play_done(playback, end, digit=digit)
        if entries:
            self._activate(entries[0])
        else:
            del self.play_queues[playback.target]

    def _stop_queue(self, target: PlayTarget, end: str, play_id: str = "", digit: str = "") -> bool:
        entries = self.play_queues.get(target)
        if not entries:
            return False
        stopped = False
        for playback in list(entries):
            if play_id and playback.play_id != play_id:
                continue
            stopped = True
            if entries[0] is playback:
                self._end_playback(playback, end, digit)
            else:
                entries.remove(playback)
                self._emit_play_done(playback, end, digit=digit)
        return stopped

    def stop_play(self, *, kind: str, target_id: str, play_id: str) -> None:
        target = PlayTarget(kind, target_id)
        if target not in self.play_queues:
            self._target(kind, target_id)  # NOT_FOUND for an unknown target
            if play_id:
                raise NotFound(f"playback {play_id!r} is not playing on {kind} {target_id!r}")
            return
        if not self._stop_queue(target, "stopped", play_id) and play_id:
            raise NotFound(f"playback {play_id!r} is not playing on {kind} {target_id!r}")

    def _barge_in(self, endpoint: Endpoint, digit: str) -> None:
        for target, entries in list(self.play_queues.items()):
            if not entries or not entries[0].stop_on_dtmf:
                continue
            if target.kind == "endpoint" and target.target_id != endpoint.endpoint_id:
                continue
            if target.kind == "bridge" and target.target_id != endpoint.bridge_id:
                continue
            if target.kind == "conference" and target.target_id != endpoint.conference_id:
                continue
            for playback in [p for p in entries if p.stop_on_dtmf]:
                self._stop_queue(target, "dtmf", playback.play_id, digit)

    # -- digit collection ------------------------------------------------------------------

    def collect_digits(
        self,
        endpoint_id: str,
        *,
        min_digits: int,
        max_digits: int,
        terminators: str,
        first_digit_timeout: float | None,
        inter_digit_timeout: float | None,
        flush_buffer: bool,
    ) -> str:
        endpoint = self.endpoint(endpoint_id)
        bad = [t for t in terminators if t not in "0123456789*#ABCD"]
        if bad:
            raise InvalidArgument(f"terminators {''.join(bad)!r} are not DTMF keys")
        if max_digits and min_digits > max_digits:
            raise InvalidArgument(f"min_digits {min_digits} is above max_digits {max_digits}")
        if endpoint.collector is not None:
            self._finish_collect(endpoint, endpoint.collector.cancel())
        now = self._now()
        collector = DigitCollector(
            "cd-" + uuid.uuid4().hex,
            now=now,
            min_digits=min_digits,
            max_digits=max_digits,
            terminators=terminators,
            first_digit_timeout=first_digit_timeout or 5.0,
            inter_digit_timeout=inter_digit_timeout or 3.0,
        )
        endpoint.collector = collector
        if flush_buffer:
            endpoint.typeahead.clear()
        while endpoint.typeahead and endpoint.collector is collector:
            result = collector.feed(endpoint.typeahead.popleft(), now)
            if result is not None:
                # Report after the reply has gone out: the caller learns the id first.
                asyncio.get_running_loop().call_soon(self._finish_collect, endpoint, result)
                break
        return collector.collect_id

    def _finish_collect(self, endpoint: Endpoint, result: CollectResult) -> None:
        collector = endpoint.collector
        if collector is None:
            return
        endpoint.collector = None
        self._emit(
            DigitsCollectedEvent(
                collector.collect_id, result.digits, result.terminator, result.end
            ),
            endpoint,
        )

    # -- recording -------------------------------------------------------------------------

    def record_start(
        self,
        *,
        kind: str,
        target_id: str,
        recording_id: str,
        stereo: bool,
        storage_key: str,
        max_seconds: float | None,
    ) -> str:
        target = self._target(kind, target_id)
        recording_id = recording_id or "rec-" + uuid.uuid4().hex
        if recording_id in self.recordings:
            raise FailedPrecondition(f"recording {recording_id!r} is already running")
        try:
            path = storage_path(self.config.recording_dir, storage_key, recording_id)
        except RecordingError as exc:
            raise InvalidArgument(str(exc)) from None
        endpoints: tuple[Endpoint, ...]
        owner: Endpoint | None
        if target.kind == "endpoint":
            endpoint = self.endpoints[target_id]
            endpoints = (endpoint,) if endpoint.peer is None else (endpoint, endpoint.peer)
            owner = endpoint
        elif target.kind == "bridge":
            bridge = self.bridges[target_id]
            endpoints = (bridge.a, bridge.b)
            owner = bridge.a
        else:
            endpoints = tuple(self.conferences[target_id].members.values())
            owner = None
        try:
            capture = WavRecording(
                recording_id, path, channels=2 if stereo else 1, max_seconds=max_seconds
            )
        except OSError as exc:
            raise FailedPrecondition(f"cannot write recording at {path}: {exc.strerror}") from None
        self.recordings[recording_id] = Recording(capture, target, stereo, owner, endpoints)
        for endpoint in endpoints:
            endpoint.recordings += 1
            self._refresh(endpoint)
        return recording_id

    def record_control(self, recording_id: str, action: str) -> str:
        recording = self.recordings.get(recording_id)
        if recording is None:
            raise NotFound(f"recording {recording_id!r} is not running on this replica")
        if action == "pause":
            recording.capture.paused = True
            return "paused"
        if action == "resume":
            recording.capture.paused = False
            return "recording"
        self._finish_recording(recording_id)
        return "stopped"

    def _finish_recording(self, recording_id: str, error: str = "") -> None:
        recording = self.recordings.pop(recording_id)
        try:
            size = recording.capture.close()
        except OSError as exc:
            size, error = 0, error or f"write-failed:{exc.strerror}"
        for endpoint in recording.endpoints:
            endpoint.recordings = max(0, endpoint.recordings - 1)
            if endpoint.endpoint_id in self.endpoints:
                self._refresh(endpoint)
        self._emit(
            RecordFinished(
                recording_id,
                recording.capture.path.resolve().as_uri(),
                recording.capture.duration,
                size,
                recording.capture.channels,
                8000,
                error,
            ),
            recording.owner_endpoint,
        )

    # -- conferences -----------------------------------------------------------------------

    def create_conference(self, tenant_id: str, name: str, max_participants: int) -> str:
        if self.draining:
            raise Unavailable("media replica is draining and takes no new conferences")
        conference_id = "cf-" + uuid.uuid4().hex
        self.conferences[conference_id] = Conference(
            conference_id, tenant_id, name, max_participants, ConferenceRoom(conference_id), {}
        )
        return conference_id

    def conference(self, conference_id: str) -> Conference:
        conference = self.conferences.get(conference_id)
        if conference is None:
            raise NotFound(f"conference {conference_id!r} does not exist on this replica")
        return conference

    def destroy_conference(self, conference_id: str) -> None:
        conference = self.conference(conference_id)
        target = PlayTarget("conference", conference_id)
        if target in self.play_queues:
            self._stop_queue(target, "stopped")
        for recording_id, recording in list(self.recordings.items()):
            if recording.target == target:
                self._finish_recording(recording_id)
        for endpoint in list(conference.members.values()):
            self._leave(conference, endpoint)
        del self.conferences[conference_id]
        self._layout = None

    def join_conference(
        self, conference_id: str, endpoint_id: str, *, muted: bool, listen_only: bool
    ) -> int:
        conference = self.conference(conference_id)
        endpoint = self.endpoint(endpoint_id)
        if endpoint.conference_id == conference_id:
            raise FailedPrecondition(f"endpoint {endpoint_id!r} is already in this conference")
        if endpoint.conference_id is not None:
            raise FailedPrecondition(
                f"endpoint {endpoint_id!r} is in conference {endpoint.conference_id!r}"
            )
        if endpoint.bridge_id is not None:
            raise FailedPrecondition(
                f"endpoint {endpoint_id!r} is in bridge {endpoint.bridge_id!r}; unbridge it first"
            )
        if conference.max_participants and len(conference.members) >= conference.max_participants:
            raise ResourceExhausted(
                f"conference {conference_id!r} is full ({conference.max_participants} participants)"
            )
        participant = conference.room.join(endpoint_id, listen_only=listen_only)
        participant.muted = muted
        conference.members[endpoint_id] = endpoint
        endpoint.conference_id = conference_id
        endpoint.leg.switch_source()
        self._refresh(endpoint)
        self._layout = None
        return len(conference.members)

    def leave_conference(self, conference_id: str, endpoint_id: str) -> int:
        conference = self.conference(conference_id)
        endpoint = conference.members.get(endpoint_id)
        if endpoint is None:
            raise NotFound(f"endpoint {endpoint_id!r} is not in conference {conference_id!r}")
        self._leave(conference, endpoint)
        return len(conference.members)

    def _leave(self, conference: Conference, endpoint: Endpoint) -> None:
        conference.room.leave(endpoint.endpoint_id)
        conference.members.pop(endpoint.endpoint_id, None)
        endpoint.conference_id = None
        endpoint.leg.switch_source()
        self._refresh(endpoint)
        self._layout = None

    def _participant(self, conference_id: str, endpoint_id: str) -> Conference:
        conference = self.conference(conference_id)
        if endpoint_id not in conference.members:
            raise NotFound(f"endpoint {endpoint_id!r} is not in conference {conference_id!r}")
        return conference

    def mute(self, conference_id: str, endpoint_id: str, muted: bool) -> None:
        self._participant(conference_id, endpoint_id).room.set_muted(endpoint_id, muted)
        self._layout = None

    def set_listen_only(self, conference_id: str, endpoint_id: str, listen_only: bool) -> None:
        self._participant(conference_id, endpoint_id).room.set_listen_only(endpoint_id, listen_only)
        self._layout = None

    def whisper(self, conference_id: str, endpoint_id: str, to: list[str]) -> None:
        conference = self._participant(conference_id, endpoint_id)
        if len(to) > 1:
            raise InvalidArgument("whisper to more than one participant is not supported yet")
        target = to[0] if to else None
        if target is not None and target not in conference.members:
            raise NotFound(f"endpoint {target!r} is not in conference {conference_id!r}")
        if target == endpoint_id:
            raise InvalidArgument("a participant cannot whisper to themself")
        conference.room.whisper(endpoint_id, target)
        self._layout = None

    # -- the 20 ms tick --------------------------------------------------------------------

    def _on_tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        # Keep a fixed 20 ms grid; if the loop fell far behind, skip ahead rather than burst.
        self._next_tick += TICK
        if self._next_tick < now - 5 * TICK:
            self._next_tick = now + TICK
        self._tick_handle = self._loop.call_at(self._next_tick, self._on_tick)
        try:
            self._tick(now)
        except Exception:
            self.log.exception("media_tick_failed")

    def _tick(self, now: float) -> None:
        decoding = [e for e in self.endpoints.values() if e.jitter is not None]
        for endpoint in decoding:
            endpoint.inbound_frame = endpoint.pull_frame(now)
            endpoint.outbound_frame = None
        for endpoint in decoding:
            self._detect(endpoint, endpoint.inbound_frame, now)  # type: ignore[arg-type]
        self._play_tick(now)
        self._mix_tick(now)
        self._record_tick()
        for endpoint in list(self.endpoints.values()):
            if endpoint.collector is not None:
                result = endpoint.collector.check_timeout(now)
                if result is not None:
                    self._finish_collect(endpoint, result)

    def _detect(self, endpoint: Endpoint, samples: np.ndarray, now: float) -> None:
        if endpoint.dtmf_detector is not None:
            for notice in endpoint.dtmf_detector.process(samples):
                if isinstance(notice, DtmfDetection):
                    self._barge_in(endpoint, notice.digit)
                elif isinstance(notice, DtmfDigitEnded):
                    duration = (notice.end_sample - notice.start_sample) / 8000
                    self._digit(endpoint, notice.digit, duration, "inband", now)
        if endpoint.fax_detector is not None:
            for found in endpoint.fax_detector.process(samples):
                self._emit(FaxToneEvent(found.tone), endpoint)

    def _play_tick(self, now: float) -> None:
        self._conference_prompts = {}
        for target, entries in list(self.play_queues.items()):
            if not entries:
                continue
            playback = entries[0]
            frame = playback.read()
            if frame is None:
                end = "max_duration" if playback.hit_max_duration else "completed"
                self._end_playback(playback, end)
                if target in self.play_queues:
                    frame = self.play_queues[target][0].read()
                if frame is None:
                    continue
            if target.kind == "conference":
                self._conference_prompts[target.target_id] = frame
                continue
            for endpoint in self._sinks(target):
                endpoint.send_frame(frame, now)
                endpoint.outbound_frame = frame

    def _mix_tick(self, now: float) -> None:
        if not self.conferences:
            return
        if self._layout is None:
            rooms = [c.room for c in self.conferences.values()]
            layout, order = build_layout(rooms)
            members = {
                endpoint_id: endpoint
                for conference in self.conferences.values()
                for endpoint_id, endpoint in conference.members.items()
            }
            self._layout = (layout, [members[endpoint_id] for endpoint_id in order])
        layout, rows = self._layout
        if not rows:
            return
        frames = np.zeros((len(rows), FRAME), dtype=np.int16)
        for index, endpoint in enumerate(rows):
            if endpoint.inbound_frame is not None:
                frames[index] = endpoint.inbound_frame
        mixed = mix(frames, layout)
        prompts = self._conference_prompts
        for index, endpoint in enumerate(rows):
            frame = mixed[index]
            prompt = prompts.get(endpoint.conference_id or "")
            if prompt is not None:
                frame = np.clip(frame.astype(np.int32) + prompt, -32768, 32767).astype(np.int16)
            endpoint.outbound_frame = frame
            if endpoint.playing == 0:
                endpoint.send_frame(frame, now)

    def _record_tick(self) -> None:
        for recording_id, recording in list(self.recordings.items()):
            capture = recording.capture
            endpoints = recording.endpoints
            if recording.target.kind == "conference":
                conference = self.conferences.get(recording.target.target_id)
                members = list(conference.members.values()) if conference else []
                total = np.zeros(FRAME, dtype=np.int32)
                for endpoint in members:
                    if endpoint.inbound_frame is not None:
                        total += endpoint.inbound_frame
                capture.write(np.clip(total, -32768, 32767).astype(np.int16))
            elif recording.target.kind == "bridge" or len(endpoints) == 2:
                left = _frame_or_silence(endpoints[0].inbound_frame)
                right = _frame_or_silence(endpoints[1].inbound_frame)
                if recording.target.kind == "endpoint" and endpoints[0].outbound_frame is not None:
                    right = endpoints[0].outbound_frame  # a prompt replaced the peer's audio
                capture.write(left, right)
            else:
                endpoint = endpoints[0]
                capture.write(
                    _frame_or_silence(endpoint.inbound_frame),
                    _frame_or_silence(endpoint.outbound_frame),
                )
            if capture.full:
                self._finish_recording(recording_id)

    # -- housekeeping ----------------------------------------------------------------------

    def _on_housekeeping(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._housekeeping_handle = self._loop.call_at(
            now + HOUSEKEEPING / HOUSEKEEPING_SLICES, self._on_housekeeping
        )
        try:
            self._housekeeping(now)
        except Exception:
            self.log.exception("media_housekeeping_failed")

    def _flush_endpoint(self, endpoint: Endpoint, now: float) -> None:
        if endpoint.relay is not None:
            endpoint.relay.flush_counters()
        if endpoint.last_rtp_at:
            endpoint.leg.note_relayed(endpoint.last_rtp_at)

    def _housekeeping(self, now: float) -> None:
        if not self._sweep:
            self._sweep = list(self.endpoints.values())
            self._sweep_size = -(-len(self._sweep) // HOUSEKEEPING_SLICES)
        batch = self._sweep[-self._sweep_size :] if self._sweep_size else []
        del self._sweep[len(self._sweep) - len(batch) :]
        wallclock = time.time()
        for endpoint in batch:
            if endpoint.closed:
                continue
            self._flush_endpoint(endpoint, now)
            timer = endpoint.leg.get_timer()
            if timer is not None and now >= timer:
                endpoint.leg.handle_timer(now)
            while (event := endpoint.leg.next_event()) is not None:
                if isinstance(event, RtpTimedOut):
                    self._emit(RtpTimeoutEvent(event.silent_for), endpoint)
                elif isinstance(event, RtcpDue):
                    endpoint.send_rtcp(endpoint.leg.build_rtcp(now, wallclock))
            if endpoint.next_stats_at is not None and now >= endpoint.next_stats_at:
                assert endpoint.stats_interval is not None
                endpoint.next_stats_at = now + endpoint.stats_interval
                self._emit(LegStatsEvent(self._snapshot(endpoint)), endpoint)
            pending = endpoint.pending_event
            if pending is not None and now - pending[3] > _EVENT_END_TIMEOUT:
                # Every end packet of this press was lost: report it with what we saw.
                digit, timestamp, started, last_seen = pending
                endpoint.pending_event = None
                endpoint.closed_events.append(timestamp)
                self._digit(endpoint, digit, last_seen - started, "rfc4733", now)
        wall, cpu = time.monotonic(), time.process_time()
        elapsed = wall - self._cpu_mark[0]
        if elapsed >= 1.0:
            busy = (cpu - self._cpu_mark[1]) / elapsed
            # About a five-second memory: each second weighs a fifth.
            self._load = 0.8 * self._load + 0.2 * busy
            self._cpu_mark = (wall, cpu)


def _frame_or_silence(frame: np.ndarray | None) -> np.ndarray:
    return frame if frame is not None else np.zeros(FRAME, dtype=np.int16)
