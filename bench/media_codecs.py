"""Media core micro-benchmarks: G.711, transcoding, mixing, DTMF detection, RTP handling.

Prints ``name: value unit`` lines. Each figure is measured for a fraction of a second of CPU
time of this process (so other load on a shared machine does not lower it; the whole run takes
a few seconds); expect +-15% between runs. "frames" are 20 ms
(160-sample) G.711 frames; "batched" means many frames per numpy call, which is how the media
service's per-tick loop is meant to drive these kernels.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np
from callmesh_media.dsp import g711
from callmesh_media.dsp.dtmf import DtmfDetector, detect_many
from callmesh_media.dsp.mixer import MixLayout, mix
from callmesh_media.dsp.resample import resample
from callmesh_media.dsp.tones import dtmf_sequence
from callmesh_media.rtp import JitterBuffer, OutboundStreamRewriter, RtpPacket

FRAME = 160
BATCH = 1000
BUDGET = 0.2  # seconds of CPU per figure


def rate(operation: Callable[[], object], units_per_call: float) -> float:
    """Units per second of ``operation``, run repeatedly for about BUDGET seconds."""
    operation()  # warm caches and lazy tables
    calls = 0
    start = time.process_time()
    while (elapsed := time.process_time() - start) < BUDGET:
        for _ in range(10):
            operation()
        calls += 10
    return calls * units_per_call / elapsed


def report(name: str, value: float, unit: str) -> None:
    print(f"{name}: {value:,.0f} {unit}".replace(",", ""))


def main() -> None:
    rng = np.random.default_rng(0)
    pcm_batch = rng.integers(-20000, 20000, (BATCH, FRAME)).astype(np.int16)
    pcm_frame = pcm_batch[0].copy()
    ulaw_batch = g711.ulaw_encode(pcm_batch)
    ulaw_frame = ulaw_batch[0].tobytes()

    report("g711_decode", rate(lambda: g711.ulaw_decode(ulaw_batch), BATCH), "frames/s")
    report("g711_encode", rate(lambda: g711.ulaw_encode(pcm_batch), BATCH), "frames/s")
    report("g711_decode_single", rate(lambda: g711.ulaw_decode(ulaw_frame), 1), "frames/s")
    report("g711_encode_single", rate(lambda: g711.ulaw_encode(pcm_frame).tobytes(), 1), "frames/s")
    report("pcmu_to_pcma", rate(lambda: g711.ulaw_to_alaw(ulaw_batch), BATCH), "frames/s")
    report(
        "pcmu_to_pcma_single",
        rate(lambda: g711.transcode(ulaw_frame, g711.PCMU, g711.PCMA), 1),
        "frames/s",
    )

    for size in (3, 10):
        rooms = 3000 // size
        layout = MixLayout.uniform(rooms=rooms, size=size)
        frames = rng.integers(-8000, 8000, (rooms * size, FRAME)).astype(np.int16)
        per_second = rate(functools.partial(mix, frames, layout), rooms * size)
        report(f"mixer_{size}party", per_second, "participants/s")
        # Each participant needs 50 mixed frames a second in real time.
        report(f"mixer_{size}party_capacity", per_second / 50, "participants/core")

    # In-band DTMF detection fed 20 ms at a time, like one leg's decoded audio.
    audio = dtmf_sequence("0123456789*#ABCD" * 4, level_dbm0=-15.0)
    audio += rng.normal(0, 300, len(audio))
    chunks = [audio[i : i + FRAME] for i in range(0, len(audio) - FRAME, FRAME)]
    detector = DtmfDetector()
    position = 0

    def detect_one() -> None:
        nonlocal position
        detector.process(chunks[position % len(chunks)])
        position += 1

    frames_per_second = rate(detect_one, 1)
    report("dtmf_detect", frames_per_second, "frames/s")
    report("dtmf_detect_capacity", frames_per_second / 50, "channels/core")

    # The same, batched: one measurement call per tick for many channels (detect_many).
    channels = 500
    detectors = [DtmfDetector() for _ in range(channels)]
    tick = 0

    def detect_tick() -> None:
        nonlocal tick
        chunk = chunks[tick % len(chunks)]
        detect_many(detectors, [chunk] * channels)
        tick += 1

    frames_per_second = rate(detect_tick, channels)
    report("dtmf_detect_batched", frames_per_second, "frames/s")
    report("dtmf_detect_batched_capacity", frames_per_second / 50, "channels/core")

    prompt = rng.normal(0, 3000, 48000 * 2)
    report("resample_48k_to_8k", rate(lambda: resample(prompt, 48000, 8000), 2.0), "x realtime")

    packet = RtpPacket(0, 1234, 160_000, 0xABCDEF, ulaw_frame)
    wire = bytes(packet)
    report("rtp_parse", rate(lambda: RtpPacket.parse(wire), 1), "packets/s")
    report("rtp_serialize", rate(lambda: bytes(packet), 1), "packets/s")

    rewriter = OutboundStreamRewriter(ssrc=1, initial_sequence=0, initial_timestamp=0)
    counter = 0

    def rewrite_one() -> None:
        nonlocal counter
        counter += 1
        rewriter.rewrite(
            RtpPacket(0, counter & 0xFFFF, (counter * 160) & 0xFFFFFFFF, 7, ulaw_frame),
            counter * 0.02,
        )

    report("rtp_rewrite", rate(rewrite_one, 1), "packets/s")

    buffer = JitterBuffer()
    tick = 0

    def buffer_one() -> None:
        nonlocal tick
        tick += 1
        now = tick * 0.02
        buffer.push(RtpPacket(0, tick & 0xFFFF, (tick * 160) & 0xFFFFFFFF, 7, ulaw_frame), now)
        buffer.pop(now + 0.001)

    report("jitterbuffer_push_pop", rate(buffer_one, 1), "packets/s")


if __name__ == "__main__":
    main()
