"""Fuzz target for the sip-edge parsers: SIP messages, stream framing, SDP, digest headers.

Any exception other than the parsers' own (``SipParseError``, ``SdpError``,
``DigestError``) is a crash.

With atheris installed (``make fuzz``)::

    python services/sip-edge/fuzz/fuzz_sip.py [atheris/libFuzzer options] [corpus dirs]

Without atheris it runs as a plain mutation fuzzer over corpus directories::

    python services/sip-edge/fuzz/fuzz_sip.py --seconds 20 /work/shared/testdata/rfc4475

A crashing input is written to ``crash-<sha1>`` in the current directory.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _load_atheris() -> Any:
    try:
        return importlib.import_module("atheris")
    except ImportError:
        return None


# "--plain" skips atheris (and its instrumentation) even when it is installed.
_ATHERIS = None if "--plain" in sys.argv else _load_atheris()

# Under atheris the parser modules are instrumented for coverage guidance.
with _ATHERIS.instrument_imports() if _ATHERIS is not None else contextlib.nullcontext():
    from callmesh_sip_edge.sip.digest import (
        DigestAuthenticator,
        parse_auth_params,
        parse_challenge,
        parse_credentials,
    )
    from callmesh_sip_edge.sip.errors import DigestError, SdpError, SipParseError
    from callmesh_sip_edge.sip.message import SipRequest
    from callmesh_sip_edge.sip.parser import (
        ParserLimits,
        StreamFramer,
        build_error_response,
        parse_message,
    )
    from callmesh_sip_edge.sip.sdp import answer_offer, parse_sdp
    from callmesh_sip_edge.sip.transaction import Destination, TransactionLayer
    from callmesh_sip_edge.sip.validation import check_request

EXPECTED = (SipParseError, SdpError, DigestError)
_AUTHENTICATOR = DigestAuthenticator("fuzz.example.com", b"fuzzing-secret-0123456789")
_LIMITS = ParserLimits(max_message_size=16_384, max_headers=64, max_header_length=4_096)

SEEDS: list[bytes] = [
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendonly\r\n",
    b'Digest username="101", realm="fuzz.example.com", nonce="abc", uri="sip:x",'
    b' response="0123", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c1", opaque="o"',
    b'Digest realm="r", nonce="n", algorithm=MD5, qop="auth,auth-int", stale=true',
]


def _exercise_message(data: bytes) -> None:
    try:
        message = parse_message(data, limits=_LIMITS)
    except SipParseError as error:
        build_error_response(data, error)
        return
    try:
        message.validate()
        if isinstance(message, SipRequest):
            check_request(message)
        _ = message.expires, message.tokens("supported"), message.get_list("allow")
    except SipParseError:
        pass
    # Whatever parsed must serialize and parse again.
    again = parse_message(message.to_bytes(), limits=ParserLimits(max_message_size=1 << 20))
    assert again.start_line() == message.start_line()
    lazy = parse_message(data, limits=_LIMITS, lazy=True)
    assert lazy.start_line() == message.start_line()


def _exercise_stream(data: bytes) -> None:
    framer = StreamFramer(_LIMITS)
    step = 1 + (len(data) % 7)
    for offset in range(0, len(data), step):
        frames = framer.feed(data[offset : offset + step])
        for frame in frames.messages:
            with contextlib.suppress(SipParseError):
                parse_message(frame, stream=True, limits=_LIMITS)
        if frames.error is not None:
            build_error_response(frames.error.head, frames.error)
            break


def _exercise_transactions(data: bytes) -> None:
    layer = TransactionLayer()
    source = Destination("UDP", "192.0.2.1", 5060)
    layer.receive_data(data, source, 0.0)
    layer.receive_data(data, source, 0.1)  # as a retransmission
    while layer.next_event() is not None:
        pass
    layer.handle_timer(100.0)
    layer.messages_to_send()


def _exercise_sdp(data: bytes) -> None:
    try:
        sdp = parse_sdp(data)
    except SdpError:
        return
    assert parse_sdp(sdp.to_bytes()).to_bytes() == sdp.to_bytes()
    try:
        answer = answer_offer(sdp, local_address="203.0.113.1", local_port=30000, session_id="1")
    except SdpError:
        return
    parse_sdp(answer.sdp.to_bytes())


def _exercise_digest(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        parse_auth_params(text)
        parse_challenge(text)
    except DigestError:
        pass
    try:
        credentials = parse_credentials(text)
    except DigestError:
        return
    _AUTHENTICATOR.verify(credentials, method="REGISTER", ha1="0" * 64, now=1_000.0)
    _AUTHENTICATOR.verify(credentials, method="REGISTER", ha1=None, now=1_000.0)
    parse_credentials(credentials.to_header_value())


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; only the parsers' own errors may escape the parsers."""
    _exercise_message(data)
    _exercise_stream(data)
    _exercise_transactions(data)
    _exercise_sdp(data)
    _exercise_digest(data)


# ---------------------------------------------------------------------------
# Plain-Python mutation fuzzing (when atheris is not installed)

_TOKENS = [
    b"\r\n",
    b"\r\n ",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"%",
    b"%00",
    b"@",
    b"=",
    b"tag=",
    b"branch=z9hG4bK",
    b"Content-Length: ",
    b"l: 99999",
    b"-1",
    b"SIP/2.0",
    b"sip:",
    b"v=",
    b"m=audio 0 RTP/AVP ",
    b"a=rtpmap:",
    b"c=IN IP4 ",
    b"qop=auth",
    b"nc=",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    b"4294967296",
]


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        choice = rng.randrange(7)
        position = rng.randint(0, len(buffer))
        if choice == 0 and buffer:  # flip a byte
            index = rng.randrange(len(buffer))
            buffer[index] = rng.randrange(256)
        elif choice == 1:  # insert a grammar token
            buffer[position:position] = rng.choice(_TOKENS)
        elif choice == 2 and buffer:  # delete a span
            end = min(len(buffer), position + rng.randint(1, 16))
            del buffer[position:end]
        elif choice == 3 and buffer:  # duplicate a line
            lines = bytes(buffer).split(b"\r\n")
            line = rng.choice(lines)
            lines.insert(rng.randint(0, len(lines)), line)
            buffer = bytearray(b"\r\n".join(lines))
        elif choice == 4:  # splice with another input
            other = rng.choice(corpus)
            cut = rng.randint(0, len(other))
            buffer = buffer[:position] + bytearray(other[cut:])
        elif choice == 5 and buffer:  # truncate
            del buffer[position:]
        else:  # repeat a span (long values)
            span = bytes(buffer[position : position + rng.randint(1, 8)]) or b"a"
            buffer[position:position] = span * rng.randint(2, 300)
    return bytes(buffer[: 1 << 16])


def _load_corpus(paths: list[str]) -> list[bytes]:
    corpus = list(SEEDS)
    for name in paths:
        path = Path(name)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        corpus.extend(p.read_bytes() for p in files)
    return corpus


def _run_checked(target: Callable[[bytes], None], data: bytes) -> None:
    try:
        target(data)
    except EXPECTED:
        raise AssertionError("a parser error escaped the exercise code") from None
    except Exception:
        digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        Path(f"crash-{digest}").write_bytes(data)
        print(f"crash: input written to crash-{digest}", file=sys.stderr)
        raise


def _options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("corpus", nargs="*", default=["/work/shared/testdata/rfc4475"])
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--plain", action="store_true", help="mutation fuzzing without atheris")
    parser.add_argument(
        "--work-corpus",
        default=".local/fuzz/sip",
        help="writable directory where atheris keeps the inputs it finds",
    )
    return parser.parse_known_args(argv)


def run_without_atheris(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    corpus = _load_corpus(args.corpus)
    for data in corpus:
        _run_checked(test_one_input, data)
    executions = len(corpus)
    started = time.monotonic()
    deadline = started + (args.seconds if args.seconds is not None else 20.0)
    while time.monotonic() < deadline:
        for _ in range(50):
            _run_checked(test_one_input, mutate(rng.choice(corpus), rng, corpus))
        executions += 50
    elapsed = time.monotonic() - started
    print(
        f"fuzz_sip: {executions} inputs ({len(corpus)} corpus, seed {seed}) in {elapsed:.1f} s,"
        f" {executions / max(elapsed, 1e-9):.0f} exec/s, no crash"
    )
    return 0


def main() -> int:
    args, libfuzzer_args = _options(sys.argv[1:])
    if _ATHERIS is None or args.plain:
        return run_without_atheris(args)
    # libFuzzer writes new inputs into the first corpus directory: give it a writable one
    # ahead of the (read-only) seed directories.
    work = Path(args.work_corpus)
    work.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(SEEDS):
        (work / f"seed-{index}").write_bytes(seed)
    argv = [sys.argv[0], *libfuzzer_args, str(work), *args.corpus]
    if args.seconds is not None:
        argv.append(f"-max_total_time={int(args.seconds)}")
    _ATHERIS.Setup(argv, test_one_input)
    _ATHERIS.Fuzz()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
