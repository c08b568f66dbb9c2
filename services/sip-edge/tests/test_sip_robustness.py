"""Hostile inputs: cost must stay linear and only the parsers' own errors may escape."""

from __future__ import annotations

import importlib.util
import random
import time
from pathlib import Path
from types import ModuleType

import pytest
from callmesh_sip_edge.sip.errors import SdpError, SipParseError
from callmesh_sip_edge.sip.headers import parse_via
from callmesh_sip_edge.sip.parser import ParserLimits, parse_message
from callmesh_sip_edge.sip.sdp import parse_sdp

FUZZ_TARGET = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_sip.py"
# The RFC 4475 corpus (plus test.dat) kept in the repository, so a fresh clone is complete.
CORPUS = Path(__file__).resolve().parent / "data" / "rfc4475"
SDP_HEAD = b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def test_long_blank_runs_with_folding_stay_linear() -> None:
    # A regex unfolding with [ \t]* before the line break took ~20 s on this input.
    data = (
        b"OPTIONS sip:a@example.com SIP/2.0\r\nSubject: x"
        + b" " * 60_000
        + b"y\r\n z\r\n"
        + b"X-Folds: a"
        + b"\r\n b" * 1_000
        + b"\r\n\r\n"
    )
    started = time.perf_counter()
    with pytest.raises(SipParseError, match="Missing Via"):
        parse_message(data, limits=ParserLimits(max_header_length=100_000))
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("digits", ["²", "9" * 5000, "٣"])
def test_numbers_that_int_rejects(digits: str) -> None:
    try:
        via = parse_via(f"SIP/2.0/UDP h;rport={digits};branch=z9hG4bK1")
    except SipParseError:
        pass  # non-ASCII is not a token: rejected up front
    else:
        assert via.rport is None
    for body in (
        SDP_HEAD + f"m=audio {digits} RTP/AVP 0\r\n".encode(),
        SDP_HEAD + f"m=audio 5000 RTP/AVP {digits}\r\n".encode(),
        SDP_HEAD.replace(b"o=a 1 1", f"o=a 1 {digits}".encode()),
    ):
        with pytest.raises(SdpError):
            parse_sdp(body)
    with pytest.raises(SipParseError):
        parse_message(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCSeq: " + digits.encode() + b" INVITE\r\n\r\n"
        )


def test_huge_ptime_is_an_sdp_error() -> None:
    sdp = parse_sdp(SDP_HEAD + b"m=audio 5000 RTP/AVP 0\r\na=ptime:1e400\r\n")
    with pytest.raises(SdpError, match="ptime"):
        _ = sdp.media[0].ptime


def _load_fuzz_target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_sip_target", FUZZ_TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fuzz_target_short_deterministic_run() -> None:
    """A few hundred mutations of the corpus through the fuzz target (make fuzz runs longer)."""
    target = _load_fuzz_target()
    corpus = [*target.SEEDS, *(p.read_bytes() for p in sorted(CORPUS.glob("*.dat")))]
    rng = random.Random(20261123)
    for data in corpus:
        target.test_one_input(data)
    for _ in range(400):
        target.test_one_input(target.mutate(rng.choice(corpus), rng, corpus))
