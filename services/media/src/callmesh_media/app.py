"""Wiring of the media service: the one place that builds its adapters and passes them in.

- the sound library (system prompts, music on hold, tenant prompts) and the event bus;
- the media engine: RTP sockets from `CALLMESH_MEDIA_RTP_PORT_MIN..MAX`, the 20 ms tick;
- the `MediaControl` gRPC servicer;
- drain: on SIGTERM the engine refuses new endpoints (UNAVAILABLE) and GetLoad reports
  draining; the drain hook returns when the last endpoint is gone, and whatever is left when
  the grace runs out is closed with `replica-draining-deadline`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from callmesh.media.v1 import media_pb2_grpc
from callmesh_core.service import ServiceContext, metric_prefix, run_service
from prometheus_client import Gauge

from callmesh_media.config import MediaSettings
from callmesh_media.engine import EngineConfig, MediaEngine
from callmesh_media.events import EventBus
from callmesh_media.rtp import LearningPolicy
from callmesh_media.servicer import MediaControlServicer
from callmesh_media.sounds import SoundLibrary


def build_engine(settings: MediaSettings, ctx: ServiceContext[MediaSettings]) -> MediaEngine:
    sounds = SoundLibrary(
        sounds_dir=settings.media_sounds_dir,
        moh_dir=settings.media_moh_dir,
        tenant_prompts_dir=settings.media_tenant_prompts_dir,
        default_language=settings.media_default_language,
    )
    config = EngineConfig(
        replica_id=settings.replica_id,
        rtp_host=settings.media_rtp_host,
        advertised_address=settings.advertised_address,
        port_min=settings.media_rtp_port_min,
        port_max=settings.media_rtp_port_max,
        capacity_endpoints=settings.media_capacity_endpoints,
        rtp_timeout=settings.media_rtp_timeout_seconds or None,
        learning=LearningPolicy(
            max_packets=settings.media_learning_packets,
            window_seconds=settings.media_learning_seconds,
        ),
        recording_dir=settings.media_recording_dir,
    )
    return MediaEngine(config, sounds, ctx.log.child("engine"), EventBus())


def register_metrics(ctx: ServiceContext[MediaSettings], engine: MediaEngine) -> None:
    """Gauges read from the engine when /metrics is scraped (nothing to update per packet)."""
    prefix = metric_prefix(ctx.settings.service_name)
    gauges: list[tuple[str, str, Callable[[], float]]] = [
        ("active_endpoints", "RTP endpoints on this replica", lambda: len(engine.endpoints)),
        ("active_bridges", "bridges on this replica", lambda: len(engine.bridges)),
        ("active_conferences", "conference rooms on this replica", lambda: len(engine.conferences)),
        ("recordings", "recordings being written", lambda: len(engine.recordings)),
        (
            "load",
            "busy fraction of the media process over the last seconds",
            lambda: engine.load().load,
        ),
        ("draining", "1 while this replica takes no new endpoints", lambda: float(engine.draining)),
    ]
    for name, description, read in gauges:
        Gauge(f"{prefix}_{name}", description, registry=ctx.metrics).set_function(read)


async def build(ctx: ServiceContext[MediaSettings]) -> None:
    settings = ctx.settings
    engine = build_engine(settings, ctx)
    engine.start()
    ctx.grpc.add(
        media_pb2_grpc.add_MediaControlServicer_to_server,
        MediaControlServicer(engine, engine.bus, settings.replica_id),
        "callmesh.media.v1.MediaControl",
    )
    register_metrics(ctx, engine)
    # Everything built so far (modules, protobuf descriptors, gRPC) lives as long as the
    # process: keep it out of the cyclic collector's full sweeps, which otherwise stall the
    # loop (and every relayed packet) for tens of milliseconds now and then.
    gc.freeze()
    ctx.on_drain(engine.drain)
    ctx.on_close(engine.close)
    ctx.log.info(
        "media_ready",
        rtp_host=settings.media_rtp_host,
        advertised=settings.advertised_address,
        ports=f"{settings.media_rtp_port_min}-{settings.media_rtp_port_max}",
    )


def main() -> None:
    run_service(MediaSettings, build)
