from __future__ import annotations

import heapq
import random

from callmesh_media.rtp import JitterBuffer, PlayoutFrame, RtpPacket


def packet(seq: int) -> RtpPacket:
    return RtpPacket(0, seq % 65536, (seq * 160) % 2**32, 0xAB, seq.to_bytes(4, "big") * 40)


def seq_of(frame: PlayoutFrame) -> int | None:
    """The sender's sequence encoded in the payload (None for silence)."""
    return None if frame.payload is None else int.from_bytes(frame.payload[:4], "big")


def run(
    buffer: JitterBuffer,
    arrivals: list[tuple[float, int]],
    duration: float,
    tick_offset: float = 0.001,
) -> list[PlayoutFrame | None]:
    """Interleave packet arrivals and 20 ms playout ticks in time order."""
    events: list[tuple[float, int, int]] = [(t, 0, seq) for t, seq in arrivals]
    ticks = int(duration / 0.02)
    events += [(k * 0.02 + tick_offset, 1, k) for k in range(ticks)]
    heapq.heapify(events)
    out: list[PlayoutFrame | None] = []
    while events:
        t, kind, value = heapq.heappop(events)
        if kind == 0:
            buffer.push(packet(value), t)
        else:
            out.append(buffer.pop(t))
    return out


def test_shuffled_packets_come_out_in_order() -> None:
    rng = random.Random(1)
    buffer = JitterBuffer(adaptive=False, target_delay=0.1)
    # 200 packets sent every 20 ms from sequence 65500 (wraps), each delayed 0..60 ms.
    arrivals = [(i * 0.02 + rng.uniform(0, 0.06), 65500 + i) for i in range(200)]
    frames = [f for f in run(buffer, arrivals, 4.5) if f is not None]
    assert [seq_of(f) for f in frames[:200]] == list(range(65500, 65700))
    assert not any(f.concealed for f in frames[:200])
    assert buffer.stats.late == 0


def test_lost_packet_is_concealed_by_repeating_then_playout_continues() -> None:
    buffer = JitterBuffer(adaptive=False, target_delay=0.04)
    arrivals = [(i * 0.02, i) for i in range(20) if i not in (5, 9, 10, 11)]
    frames = [f for f in run(buffer, arrivals, 0.6) if f is not None]
    assert [seq_of(f) for f in frames[:14]] == [0, 1, 2, 3, 4, 4, 6, 7, 8, 8, 8, None, 12, 13]
    assert [f.concealed for f in frames[:14]] == [False] * 5 + [True] + [False] * 3 + [True] * 3 + [
        False
    ] * 2
    # After the last packet: two repeats, then the buffer goes back to filling (None).
    assert [f.concealed for f in frames[14:]] == [False] * 6 + [True, True]


def test_late_and_duplicate_packets_are_reported_and_discarded() -> None:
    buffer = JitterBuffer(adaptive=False, target_delay=0.04)
    arrivals = [(i * 0.02, i) for i in range(30) if i != 10]
    arrivals.append((0.5, 10))  # arrives 300 ms after its time
    arrivals.append((0.21, 9))  # duplicate while still buffered
    frames = run(buffer, arrivals, 0.8)
    assert buffer.stats.late == 1
    assert buffer.stats.duplicates == 1
    assert 10 not in [seq_of(f) for f in frames if f is not None and not f.concealed]


def test_adaptive_delay_grows_with_jitter_and_loses_nothing() -> None:
    rng = random.Random(5)
    calm = JitterBuffer(min_delay=0.02)
    run(calm, [(i * 0.02 + 0.01 + rng.uniform(0, 0.002), i) for i in range(300)], 6.2)
    rough = JitterBuffer(min_delay=0.02)
    # Bursty delay: mostly 10 ms, every so often 50-90 ms (Wi-Fi, congested uplink).
    arrivals = [
        (i * 0.02 + (rng.uniform(0.05, 0.09) if rng.random() < 0.1 else 0.01), i)
        for i in range(300)
    ]
    frames = [f for f in run(rough, arrivals, 7.0) if f is not None]
    assert calm.target_delay < 0.03
    assert rough.target_delay > 0.05
    assert rough.jitter > 5 * calm.jitter
    played = [s for f in frames if not f.concealed and (s := seq_of(f)) is not None]
    # Everything arrived eventually and the buffer stretched to hold it: a handful of late
    # drops while it adapts is acceptable, the bulk must play in order.
    assert played == sorted(played)
    assert rough.stats.late <= 10
    assert len(played) >= 290


def test_adaptive_buffer_sheds_delay_after_a_burst() -> None:
    buffer = JitterBuffer(min_delay=0.02, max_delay=0.3)
    # 300 ms hold-up releases 15 packets at once, then steady traffic.
    arrivals = [(0.3 if 10 <= i < 25 else i * 0.02, i) for i in range(200)]
    run(buffer, arrivals, 4.5)
    assert buffer.stats.dropped_for_delay > 0
    assert buffer.buffered_frames <= 3


def test_sender_pause_refills_instead_of_discarding_the_resumed_stream() -> None:
    buffer = JitterBuffer(adaptive=False, target_delay=0.04)
    # Packets 0..19, then the sender is silent for 1 s (DTX or hold), then 20..39.
    arrivals = [(i * 0.02, i) for i in range(20)] + [(1.4 + i * 0.02, 20 + i) for i in range(20)]
    frames = run(buffer, arrivals, 2.4)
    played = [seq_of(f) for f in frames if f is not None and not f.concealed]
    assert played == list(range(40))
    assert buffer.stats.late == 0
