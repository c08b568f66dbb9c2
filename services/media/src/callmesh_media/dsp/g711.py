"""G.711 PCMU (mu-law) and PCMA (A-law), vectorised with numpy lookup tables.

The tables are computed once from the ITU-T G.191 reference algorithm (the STL ``g711.c``
``ulaw_compress``/``alaw_compress``/``*_expand``), so every entry is bit-exact with it:

* decode: a 256-entry table indexed by the code byte;
* encode: a 65,536-entry table indexed by the int16 sample viewed as uint16.

Note on mu-law: the ITU reference takes the magnitude of a negative sample as its one's
complement (``~x``), while the widely copied Sun Microsystems ``g711.c`` (and CPython's
``audioop``) negate it. They therefore disagree on some negative inputs that sit exactly on a
quantisation boundary; A-law and both decoders agree everywhere. We follow the ITU.

PCMU<->PCMA transcoding is one 256-entry lookup each way, built as "decode, then encode to
the nearest level of the other law". That is not G.711's own conversion table (Tables 3/4 of
the Recommendation, which trade a little accuracy for transparency): A->mu->A returns the
original code for 240 of the 256 codes; the other 16 move by one quantisation step.

Tables are immutable constants, built at import (a few milliseconds), not mutable state.
Lookups use ``ndarray.take``, which is about twice as fast as fancy indexing here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]
UInt8Array = npt.NDArray[np.uint8]


def _bit_length(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    length = np.zeros_like(values)
    for bit in range(16):
        length += (values >> bit) > 0
    return length


def _ulaw_compress_all(x: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    # 14-bit magnitude, one's complement for negatives, plus the mu-law bias of 33.
    absno = np.where(x < 0, (~x) >> 2, x >> 2) + 33
    absno = np.minimum(absno, 0x1FFF)
    segment = 1 + _bit_length(absno >> 6)
    high = 8 - segment
    low = 0x0F - ((absno >> segment) & 0x0F)
    code = (high << 4) | low
    code = np.where(x >= 0, code | 0x80, code)
    return np.asarray(code, dtype=np.uint8)


def _alaw_compress_all(x: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    ix = np.where(x < 0, (~x) >> 4, x >> 4)  # 12-bit magnitude, 0..2047
    length = _bit_length(ix)
    exponent = np.maximum(length - 4, 0)
    mantissa = np.where(ix > 15, (ix >> np.maximum(length - 5, 0)) - 16, ix)
    code = np.where(ix > 15, mantissa + (exponent << 4), ix)
    code = np.where(x >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def _ulaw_expand_all() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int64)
    sign = np.where(code < 0x80, -1, 1)
    inverted = ~code
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    return np.asarray(sign * magnitude, dtype=np.int16)


def _alaw_expand_all() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int64)
    ix = (code ^ 0x55) & 0x7F
    exponent = ix >> 4
    mantissa = ix & 0x0F
    mantissa = np.where(exponent > 0, mantissa + 16, mantissa)
    mantissa = (mantissa << 4) + 0x08
    mantissa = np.where(exponent > 1, mantissa << np.maximum(exponent - 1, 0), mantissa)
    return np.where(code > 127, mantissa, -mantissa).astype(np.int16)


def _readonly(array: npt.NDArray[np.generic]) -> None:
    array.flags.writeable = False


_ALL_SAMPLES = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int64)
ULAW_DECODE_TABLE: Int16Array = _ulaw_expand_all()
ALAW_DECODE_TABLE: Int16Array = _alaw_expand_all()
ULAW_ENCODE_TABLE: UInt8Array = _ulaw_compress_all(_ALL_SAMPLES)
ALAW_ENCODE_TABLE: UInt8Array = _alaw_compress_all(_ALL_SAMPLES)
ULAW_TO_ALAW_TABLE: UInt8Array = ALAW_ENCODE_TABLE[ULAW_DECODE_TABLE.view(np.uint16)]
ALAW_TO_ULAW_TABLE: UInt8Array = ULAW_ENCODE_TABLE[ALAW_DECODE_TABLE.view(np.uint16)]
for _table in (
    ULAW_DECODE_TABLE,
    ALAW_DECODE_TABLE,
    ULAW_ENCODE_TABLE,
    ALAW_ENCODE_TABLE,
    ULAW_TO_ALAW_TABLE,
    ALAW_TO_ULAW_TABLE,
):
    _readonly(_table)
del _ALL_SAMPLES

Encoded = bytes | bytearray | memoryview | UInt8Array


def _codes(data: Encoded) -> UInt8Array:
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False)
    return np.frombuffer(data, dtype=np.uint8)


def _as_int16(samples: npt.ArrayLike) -> Int16Array:
    array = np.asarray(samples)
    if array.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 samples, got {array.dtype}")
    return array


def ulaw_decode(data: Encoded) -> Int16Array:
    """PCMU bytes (or a uint8 array of any shape) to int16 samples."""
    return ULAW_DECODE_TABLE.take(_codes(data))


def alaw_decode(data: Encoded) -> Int16Array:
    return ALAW_DECODE_TABLE.take(_codes(data))


def ulaw_encode(samples: npt.ArrayLike) -> UInt8Array:
    """int16 samples (any shape, e.g. a batch of frames) to PCMU codes; ``.tobytes()`` to send."""
    return ULAW_ENCODE_TABLE.take(_as_int16(samples).view(np.uint16))


def alaw_encode(samples: npt.ArrayLike) -> UInt8Array:
    return ALAW_ENCODE_TABLE.take(_as_int16(samples).view(np.uint16))


def ulaw_to_alaw(data: Encoded) -> UInt8Array:
    """Transcode PCMU to PCMA without a linear step in between (one table lookup)."""
    return ULAW_TO_ALAW_TABLE.take(_codes(data))


def alaw_to_ulaw(data: Encoded) -> UInt8Array:
    return ALAW_TO_ULAW_TABLE.take(_codes(data))


@dataclass(frozen=True, slots=True)
class G711Codec:
    """A G.711 variant as the SDP knows it (static payload type, rtpmap name)."""

    name: str
    payload_type: int
    decode_table: Int16Array
    encode_table: UInt8Array
    clock_rate: int = 8000

    def decode(self, data: Encoded) -> Int16Array:
        return self.decode_table.take(_codes(data))

    def encode(self, samples: npt.ArrayLike) -> UInt8Array:
        return self.encode_table.take(_as_int16(samples).view(np.uint16))

    def silence(self, samples: int) -> bytes:
        return bytes(self.encode(np.zeros(samples, dtype=np.int16)))


PCMU = G711Codec("PCMU", 0, ULAW_DECODE_TABLE, ULAW_ENCODE_TABLE)
PCMA = G711Codec("PCMA", 8, ALAW_DECODE_TABLE, ALAW_ENCODE_TABLE)


def transcode(data: Encoded, source: G711Codec, target: G711Codec) -> bytes:
    if source.name == target.name:
        return bytes(_codes(data))
    table = ULAW_TO_ALAW_TABLE if source.name == "PCMU" else ALAW_TO_ULAW_TABLE
    return table.take(_codes(data)).tobytes()


def codec_by_name(name: str) -> G711Codec | None:
    """The codec for an SDP rtpmap encoding name (case-insensitive), or None if not G.711."""
    return {"PCMU": PCMU, "PCMA": PCMA}.get(name.upper())


def codec_by_payload_type(payload_type: int) -> G711Codec | None:
    """The codec for a static RTP payload type (0 PCMU, 8 PCMA), or None."""
    return {0: PCMU, 8: PCMA}.get(payload_type)
