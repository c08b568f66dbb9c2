"""A per-leg MOS estimate from the simplified E-model (ITU-T G.107), tuned for G.711.

The full E-model has some twenty inputs; for a G.711 leg almost all sit at their defaults, so
what moves R is one-way delay (Id), packet loss (Ie-eff) and jitter, which we fold into delay
because a jitter buffer turns it into delay. The delay term follows Cole & Rosenbluth's fit to
G.107 (0.024 per ms, plus 0.11 per ms beyond 177.3 ms); the loss term is G.107's
``Ie-eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)`` with G.113's Ie = 0, Bpl = 25.1 for
G.711 with packet loss concealment, and random loss (BurstR = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_R = 93.2  # G.107 default R with every impairment at its default
G711_IE = 0.0
G711_BPL_WITH_PLC = 25.1
# Packetisation (20 ms) plus a look-ahead-free codec: the delay a leg has even on a LAN.
G711_CODEC_DELAY_MS = 20.0


@dataclass(frozen=True, slots=True)
class QualityEstimate:
    r_factor: float
    mos: float


def r_factor(
    one_way_delay_ms: float,
    loss_fraction: float,
    jitter_ms: float,
    *,
    equipment_impairment: float = G711_IE,
    loss_robustness: float = G711_BPL_WITH_PLC,
) -> float:
    """Transmission rating R (0..100) for one direction of a call."""
    # A jitter buffer sized at about twice the measured jitter is what a receiver needs to
    # avoid late losses, so that much jitter becomes mouth-to-ear delay.
    delay = max(0.0, one_way_delay_ms) + 2.0 * max(0.0, jitter_ms) + G711_CODEC_DELAY_MS
    delay_impairment = 0.024 * delay
    if delay > 177.3:
        delay_impairment += 0.11 * (delay - 177.3)
    loss_percent = 100.0 * min(1.0, max(0.0, loss_fraction))
    effective_ie = equipment_impairment + (95.0 - equipment_impairment) * loss_percent / (
        loss_percent + loss_robustness
    )
    return max(0.0, min(100.0, DEFAULT_R - delay_impairment - effective_ie))


def mos_from_r(r: float) -> float:
    """G.107 Annex B mapping from R to an estimated MOS (1.0..4.5)."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6


def estimate_quality(
    one_way_delay_ms: float, loss_fraction: float, jitter_ms: float
) -> QualityEstimate:
    r = r_factor(one_way_delay_ms, loss_fraction, jitter_ms)
    return QualityEstimate(r_factor=r, mos=mos_from_r(r))
