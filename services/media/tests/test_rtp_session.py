from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from callmesh_media.rtp import (
    LearningPolicy,
    OutboundStreamRewriter,
    RemoteAddressLearned,
    RemoteReport,
    RemoteSaidBye,
    RemoteSsrcChanged,
    RtcpDue,
    RtpLeg,
    RtpPacket,
    RtpTimedOut,
    TelephoneEventReceiver,
    TelephoneEventSender,
    TelephoneEventStarted,
    parse_rtcp,
)
from callmesh_media.rtp.quality import estimate_quality
from callmesh_media.rtp.rtcp import RtcpReceiverReport, RtcpSenderReport
from callmesh_media.rtp.session import LegEvent
from callmesh_media.rtp.statistics import ReceptionStatistics

PHONE = ("198.51.100.7", 4000)
PAYLOAD = b"\xff" * 160


def media(seq: int, ts: int, ssrc: int = 0xAB, marker: bool = False) -> bytes:
    return bytes(RtpPacket(0, seq % 65536, ts % 2**32, ssrc, PAYLOAD, marker=marker))


def drain(leg: RtpLeg) -> list[LegEvent]:
    events = []
    while (event := leg.next_event()) is not None:
        events.append(event)
    return events


def test_sequence_wrap_is_extended_and_not_loss() -> None:
    stats = ReceptionStatistics(0xAB, 65400, 8000)
    for i in range(300):
        stats.update((65400 + i) % 65536, i * 160, i * 0.02)
    assert stats.valid
    assert stats.extended_max == 65536 + (65400 + 299) % 65536
    assert stats.lost == 0
    assert stats.expected == stats.received == 299  # the first packet was probation


def test_loss_counts_and_fraction_lost_in_the_report_block() -> None:
    stats = ReceptionStatistics(0xAB, 1000, 8000)
    sent = 0
    for i in range(1000):
        if i > 1 and i % 10 == 0:
            continue  # every tenth packet lost on the way
        stats.update(1000 + i, i * 160, i * 0.02)
        sent += 1
    block = stats.report_block(0, 0)
    assert stats.lost == 99
    assert block.packets_lost == 99
    assert block.fraction_lost == int(99 / 999 * 256)
    # The next interval had no loss.
    for i in range(1000, 1100):
        stats.update(1000 + i, i * 160, i * 0.02)
    assert stats.report_block(0, 0).fraction_lost == 0


def test_interarrival_jitter_follows_rfc3550_a8() -> None:
    steady = ReceptionStatistics(1, 0, 8000)
    jittery = ReceptionStatistics(2, 0, 8000)
    for i in range(500):
        steady.update(i, i * 160, 10.0 + i * 0.02)
        # Arrivals alternate 5 ms early / 5 ms late: every transit difference is 10 ms.
        jittery.update(i, i * 160, 10.0 + i * 0.02 + (0.005 if i % 2 else -0.005))
    assert steady.jitter == pytest.approx(0.0, abs=1e-6)
    assert jittery.jitter == pytest.approx(80.0, rel=0.01)  # 10 ms in 8 kHz units


def test_address_learning_accepts_nat_port_then_locks_out_bleed() -> None:
    leg = RtpLeg(
        local_ssrc=1,
        signalled_address=PHONE,
        now=0.0,
        learning=LearningPolicy(max_packets=5, window_seconds=2.0),
    )
    natted = ("198.51.100.7", 61234)  # same IP as signalled, port rewritten by NAT
    attacker_same_ip = ("198.51.100.7", 5555)
    attacker = ("203.0.113.66", 4000)
    assert leg.receive_datagram(media(1, 160), attacker, 0.01) is None  # wrong IP, even now
    for i in range(5):
        assert leg.receive_datagram(media(2 + i, 320 + 160 * i), natted, 0.02 * (i + 1))
    assert leg.remote_address == natted
    assert RemoteAddressLearned(natted) in drain(leg)
    # Window closed after 5 packets: even the signalled IP on another port cannot move it.
    assert leg.receive_datagram(media(7, 1120), attacker_same_ip, 0.2) is None
    assert leg.receive_datagram(media(8, 1280), attacker, 0.3) is None
    assert leg.remote_address == natted
    assert leg.receive_datagram(media(9, 1440), natted, 0.32) is not None
    assert leg.statistics().dropped_foreign_source == 3


def test_learning_window_also_closes_with_time() -> None:
    leg = RtpLeg(
        local_ssrc=1,
        signalled_address=PHONE,
        now=0.0,
        learning=LearningPolicy(max_packets=100, window_seconds=1.0),
    )
    assert leg.receive_datagram(media(1, 0), ("198.51.100.7", 7000), 5.0) is not None
    assert leg.receive_datagram(media(2, 160), ("198.51.100.7", 7002), 5.5) is not None
    assert leg.remote_address == ("198.51.100.7", 7002)  # still learning inside the window
    assert leg.receive_datagram(media(3, 320), ("198.51.100.7", 7004), 6.1) is None
    assert leg.remote_address == ("198.51.100.7", 7002)
    # A re-INVITE with a new c= address re-opens learning for that address only.
    leg.resignal(("192.0.2.44", 9000))
    assert leg.receive_datagram(media(4, 480), ("198.51.100.7", 7002), 7.0) is None
    assert leg.receive_datagram(media(5, 640), ("192.0.2.44", 9000), 7.1) is not None


def test_inactivity_timeout_is_reported_once_per_silence() -> None:
    leg = RtpLeg(
        local_ssrc=1,
        signalled_address=PHONE,
        now=100.0,
        inactivity_timeout=10.0,
        rtcp_interval=None,
    )
    assert leg.get_timer() == 110.0
    leg.receive_datagram(media(1, 0), PHONE, 101.0)
    assert leg.get_timer() == 111.0
    leg.handle_timer(105.0)  # early wake-up: nothing happens
    assert not any(isinstance(e, RtpTimedOut) for e in drain(leg))
    leg.handle_timer(111.0)
    assert [e for e in drain(leg) if isinstance(e, RtpTimedOut)] == [RtpTimedOut(10.0)]
    assert leg.get_timer() is None
    leg.handle_timer(200.0)
    assert drain(leg) == []
    leg.receive_datagram(media(2, 160), PHONE, 201.0)  # media resumes: re-armed
    assert leg.get_timer() == 211.0


def test_rtcp_is_due_at_randomised_intervals() -> None:
    leg = RtpLeg(
        local_ssrc=1,
        signalled_address=PHONE,
        now=0.0,
        inactivity_timeout=None,
        rng=random.Random(42),
    )
    due_at = []
    now = 0.0
    while now < 300.0:
        timer = leg.get_timer()
        assert timer is not None and timer > now
        now = timer
        leg.handle_timer(now)
        if any(isinstance(e, RtcpDue) for e in drain(leg)):
            due_at.append(now)
    gaps = np.diff(due_at)
    assert 1.25 <= due_at[0] <= 3.75  # the first report comes after half an interval
    assert gaps.min() >= 2.5 and gaps.max() <= 7.5
    assert gaps.mean() == pytest.approx(5.0, rel=0.15)
    assert gaps.std() > 0.5  # really randomised, not a fixed period


def test_malformed_datagrams_are_counted_not_raised() -> None:
    leg = RtpLeg(local_ssrc=1, signalled_address=PHONE, now=0.0)
    assert leg.receive_datagram(b"\x80\x00", PHONE, 0.0) is None
    assert leg.receive_datagram(b"\x40" + bytes(15), PHONE, 0.0) is None
    assert leg.statistics().malformed_packets == 2


def _far_end_sees(packets: list[bytes]) -> tuple[RtpLeg, list[LegEvent]]:
    far = RtpLeg(local_ssrc=9, signalled_address=("192.0.2.1", 30000), now=0.0)
    for i, data in enumerate(packets):
        assert far.receive_datagram(data, ("192.0.2.1", 30000), i * 0.02) is not None
    return far, drain(far)


def test_rebridging_keeps_one_stream_for_the_far_end() -> None:
    rewriter = OutboundStreamRewriter(ssrc=0x5EED, initial_sequence=65530, initial_timestamp=1000)
    out: list[RtpPacket] = []
    now = 0.0
    # Peer A, then a prompt, then peer B: three sources with unrelated numbering.
    for source, seq0, ts0, count in (
        (0xA, 100, 50_000, 40),
        (0xB, 7, 9, 30),
        (0xC, 60000, 2**32 - 800, 40),
    ):
        if source == 0xB:
            rewriter.switch_source()  # the bridge tells the leg a prompt takes over
        for i in range(count):
            packet = RtpPacket(0, (seq0 + i) % 65536, (ts0 + 160 * i) % 2**32, source, PAYLOAD)
            rewritten = rewriter.rewrite(packet, now)
            assert rewritten is not None
            out.append(rewritten)
            now += 0.02
    assert {p.ssrc for p in out} == {0x5EED}
    sequences = [p.sequence_number for p in out]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(sequences))
    timestamps = [p.timestamp for p in out]
    assert all((b - a) % 2**32 == 160 for a, b in itertools.pairwise(timestamps))
    assert [i for i, p in enumerate(out) if p.marker] == [0, 40, 70]
    assert rewriter.source_switches == 2

    far, events = _far_end_sees([bytes(p) for p in out])
    stats = far.statistics()
    assert stats.packets_lost == 0
    assert [e for e in events if isinstance(e, RemoteSsrcChanged)] == [
        RemoteSsrcChanged(None, 0x5EED)
    ]


def test_rewriter_keeps_upstream_gaps_and_drops_stragglers_of_the_old_source() -> None:
    rewriter = OutboundStreamRewriter(ssrc=1, initial_sequence=0, initial_timestamp=0)
    a = [rewriter.rewrite(RtpPacket(0, s, s * 160, 0xA, PAYLOAD), s * 0.02) for s in (10, 11, 13)]
    assert [p.sequence_number for p in a if p] == [0, 1, 3]  # the upstream gap stays a gap
    b = rewriter.rewrite(RtpPacket(0, 500, 0, 0xB, PAYLOAD), 0.30)
    assert b is not None and b.sequence_number == 4
    # The 2 packets' worth of silence between sources shows as elapsed time, not a jump.
    assert b.timestamp == 3 * 160 + round((0.30 - 0.26) * 8000)
    assert rewriter.rewrite(RtpPacket(0, 12, 12 * 160, 0xA, PAYLOAD), 0.31) is None
    # A packet of B older than its first mapped one would reuse A's numbers: dropped.
    assert rewriter.rewrite(RtpPacket(0, 499, 0, 0xB, PAYLOAD), 0.32) is None
    assert rewriter.dropped_stale == 2


def _exchange_reports(loss_every: int | None, seed: int = 3) -> tuple[RtpLeg, RtpLeg]:
    """Leg `ours` sends to `theirs` over a 30 ms path losing every `loss_every`-th packet;
    they send back without loss and report; returns (ours, theirs)."""
    rng = random.Random(seed)
    ours = RtpLeg(local_ssrc=0x0A, signalled_address=("192.0.2.2", 2000), now=0.0)
    theirs = RtpLeg(local_ssrc=0x0B, signalled_address=("192.0.2.1", 1000), now=0.0)
    delay = 0.030
    t = 0.0
    for i in range(500):
        data = ours.prepare_outgoing(RtpPacket(0, i, i * 160, 0x77, PAYLOAD), t)
        assert data is not None
        lost = loss_every is not None and i % loss_every == 3
        if not lost:
            theirs.receive_datagram(data, ("192.0.2.1", 1000), t + delay + rng.uniform(0, 0.004))
        echo = theirs.prepare_outgoing(RtpPacket(0, i, i * 160, 0x99, PAYLOAD), t)
        assert echo is not None
        ours.receive_datagram(echo, ("192.0.2.2", 2000), t + delay)
        if i == 250:
            sr = ours.build_rtcp(t, wallclock=1_700_000_000.0 + t)
            theirs.receive_datagram(sr, ("192.0.2.1", 1000), t + delay)
        t += 0.02
    rr = theirs.build_rtcp(t, wallclock=1_700_000_000.0 + t)
    ours.receive_datagram(rr, ("192.0.2.2", 2000), t + delay)
    return ours, theirs


def test_rtcp_reports_carry_loss_jitter_and_give_round_trip_time() -> None:
    ours, _ = _exchange_reports(loss_every=10)
    events = drain(ours)
    (report,) = [e for e in events if isinstance(e, RemoteReport)]
    assert report.round_trip_time == pytest.approx(0.060, abs=1e-3)
    assert report.fraction_lost == pytest.approx(0.1, abs=0.01)
    assert 0 < report.jitter_samples < 0.004 * 8000
    stats = ours.statistics()
    assert stats.round_trip_time == report.round_trip_time
    # What they told us about our stream becomes this leg's outbound quality.
    assert stats.remote_fraction_lost == report.fraction_lost
    assert stats.outbound_quality is not None
    assert stats.outbound_quality.mos < stats.quality.mos  # we lost 10%, they lost nothing


def test_leg_sends_sr_when_sending_and_rr_when_only_receiving() -> None:
    leg = RtpLeg(local_ssrc=5, signalled_address=PHONE, now=0.0, cname="leg-5@media-0")
    for i in range(3):
        leg.receive_datagram(media(i, i * 160), PHONE, i * 0.02)
    report, _sdes = parse_rtcp(leg.build_rtcp(1.0, 1_700_000_000.0))
    assert isinstance(report, RtcpReceiverReport)
    assert report.reports[0].ssrc == 0xAB
    leg.prepare_outgoing(RtpPacket(0, 1, 160, 3, PAYLOAD), 1.1)
    report, _ = parse_rtcp(leg.build_rtcp(1.2, 1_700_000_001.2))
    assert isinstance(report, RtcpSenderReport)
    assert (report.packet_count, report.octet_count) == (1, 160)
    # Our stream starts at the leg's initial timestamp (0); the SR samples it 0.1 s later.
    assert report.rtp_timestamp == round(0.1 * 8000)


def test_mos_falls_as_loss_rises() -> None:
    # Each leg's MOS is about what it receives: `theirs` sees the lossy direction.
    measured = [_exchange_reports(loss_every=n)[1].statistics() for n in (None, 50, 20, 10, 5)]
    losses = [s.loss_fraction for s in measured]
    mos = [s.quality.mos for s in measured]
    assert losses[0] == 0.0
    assert losses[1:] == pytest.approx([0.02, 0.05, 0.1, 0.2], abs=0.005)
    assert mos[0] > 4.3
    assert all(a > b for a, b in itertools.pairwise(mos))
    by_loss = [estimate_quality(30, loss, 2).mos for loss in (0, 0.01, 0.03, 0.1, 0.2)]
    assert by_loss[0] > 4.3
    assert all(a > b for a, b in itertools.pairwise(by_loss))
    assert by_loss[-1] < 3.0
    assert estimate_quality(300, 0, 2).mos < estimate_quality(30, 0, 2).mos
    assert estimate_quality(30, 0, 40).mos < estimate_quality(30, 0, 2).mos


def test_rtcp_on_its_own_port_only_from_the_media_source_ip() -> None:
    leg = RtpLeg(local_ssrc=1, signalled_address=PHONE, now=0.0)
    bye = bytes.fromhex("81cb000100000abc")
    leg.receive_rtcp_datagram(bye, ("203.0.113.66", 4001), 1.0)
    assert drain(leg) == []
    assert leg.statistics().dropped_foreign_source == 1
    leg.receive_rtcp_datagram(bye, ("198.51.100.7", 4001), 1.0)
    (event,) = drain(leg)
    assert isinstance(event, RemoteSaidBye) and event.ssrcs == (0xABC,)


def test_digits_sent_mid_stream_keep_their_timing_through_the_leg() -> None:
    """Audio, then an RFC 4733 press, then audio again, all through one leg's rewriter: the
    far end sees one stream and exactly one digit."""
    leg = RtpLeg(local_ssrc=0x77, signalled_address=PHONE, now=0.0, initial_sequence=100)
    sender = TelephoneEventSender(101, ssrc=0xD7, interval=0.02)
    wire: list[tuple[float, bytes]] = []
    now = 0.0
    for i in range(10):
        data = leg.prepare_outgoing(RtpPacket(0, i, i * 160, 0xA0, PAYLOAD), now)
        assert data is not None
        wire.append((now, data))
        now += 0.02
    leg.switch_source()
    start = now
    for scheduled in sender.digit("7", 0.1, timestamp=555):
        data = leg.prepare_outgoing(scheduled.packet, start + scheduled.send_offset)
        assert data is not None
        wire.append((start + scheduled.send_offset, data))
    now = start + 0.12
    leg.switch_source()
    for i in range(10, 20):
        data = leg.prepare_outgoing(RtpPacket(0, i, i * 160, 0xA0, PAYLOAD), now)
        assert data is not None
        wire.append((now, data))
        now += 0.02

    far = RtpLeg(local_ssrc=9, signalled_address=("192.0.2.1", 30000), now=0.0)
    receiver = TelephoneEventReceiver()
    digits = []
    for t, data in wire:
        packet = far.receive_datagram(data, ("192.0.2.1", 30000), t)
        assert packet is not None
        if packet.payload_type == 101:
            digits += [
                n.digit for n in receiver.receive(packet) if isinstance(n, TelephoneEventStarted)
            ]
    assert digits == ["7"]
    assert far.statistics().packets_lost == 0
    assert [e for e in drain(far) if isinstance(e, RemoteSsrcChanged)] == [
        RemoteSsrcChanged(None, 0x77)
    ]
    events = [RtpPacket.parse(d) for _, d in wire if RtpPacket.parse(d).payload_type == 101]
    # All packets of the press share one timestamp, 200 ms of media time after the stream start.
    assert {p.timestamp for p in events} == {10 * 160}


def test_a_source_that_starts_at_once_does_not_overlap_the_previous_packet() -> None:
    rewriter = OutboundStreamRewriter(ssrc=1, initial_sequence=0, initial_timestamp=0)
    for i in range(3):
        rewriter.rewrite(RtpPacket(0, i, i * 160, 0xA, PAYLOAD), i * 0.02)
    rewriter.switch_source()
    # The prompt's first packet goes out 1 ms after the peer's last one.
    first = rewriter.rewrite(RtpPacket(0, 9, 0, 0xB, PAYLOAD), 0.041)
    assert first is not None
    assert first.timestamp == 3 * 160  # right after the last packet's 160 samples


def test_only_well_formed_rtp_teaches_the_address() -> None:
    leg = RtpLeg(local_ssrc=1, signalled_address=PHONE, now=0.0)
    assert leg.receive_datagram(media(1, 0), PHONE, 0.0) is not None
    # Same IP, other port, inside the window: garbage and RTCP must not move the stream.
    assert leg.receive_datagram(b"\x80\x00garbage", ("198.51.100.7", 9999), 0.1) is None
    assert (
        leg.receive_datagram(bytes.fromhex("80c9000100000abc"), ("198.51.100.7", 9999), 0.1) is None
    )
    assert leg.remote_address == PHONE
    # Multiplexed RTCP from the learned address is taken.
    assert leg.receive_datagram(bytes.fromhex("81cb000100000abc"), PHONE, 0.2) is None
    assert any(isinstance(e, RemoteSaidBye) for e in drain(leg))
    stats = leg.statistics()
    assert (stats.malformed_packets, stats.dropped_foreign_source) == (1, 1)
