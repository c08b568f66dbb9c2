"""Recording capture: 8 kHz 16-bit WAV, mono or stereo (left = caller/endpoint_a, right =
callee/endpoint_b), written from the media tick with start/pause/resume/stop.

Frames are buffered in memory and written in chunks of about a second, so the event loop
touches the disk once a second per recording rather than fifty times.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE = 8000
_FLUSH_BYTES = 32_000
Int16Array = npt.NDArray[np.int16]


class RecordingError(Exception):
    pass


def storage_path(root: Path, storage_key: str, recording_id: str) -> Path:
    """Where a recording goes: ``storage_key`` below ``root`` (never outside it)."""
    key = storage_key or f"{recording_id}.wav"
    relative = Path(key)
    if relative.is_absolute() or ".." in relative.parts:
        raise RecordingError(
            f"storage_key {storage_key!r} must be a relative path inside the volume"
        )
    if relative.suffix.lower() != ".wav":
        relative = relative.with_name(relative.name + ".wav")
    return root / relative


class WavRecording:
    def __init__(
        self,
        recording_id: str,
        path: Path,
        *,
        channels: int,
        max_seconds: float | None = None,
    ) -> None:
        self.recording_id = recording_id
        self.path = path
        self.channels = channels
        self.max_samples = None if max_seconds is None else round(max_seconds * RATE)
        self.paused = False
        self.samples = 0
        self._buffer = bytearray()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Open for the recording's whole life (closed by close()), not one `with` block.
        self._writer = wave.open(str(path), "wb")  # noqa: SIM115
        self._writer.setnchannels(channels)
        self._writer.setsampwidth(2)
        self._writer.setframerate(RATE)
        self.closed = False

    @property
    def full(self) -> bool:
        return self.max_samples is not None and self.samples >= self.max_samples

    def write(self, left: Int16Array, right: Int16Array | None = None) -> None:
        """One frame; mono recordings mix ``right`` into ``left`` when given."""
        if self.paused or self.closed:
            return
        if self.channels == 2:
            other = right if right is not None else np.zeros_like(left)
            block = np.empty(2 * len(left), dtype="<i2")
            block[0::2] = left
            block[1::2] = other
        elif right is not None:
            block = np.clip(left.astype(np.int32) + right, -32768, 32767).astype("<i2")
        else:
            block = left.astype("<i2", copy=False)
        self._buffer += block.tobytes()
        self.samples += len(left)
        if len(self._buffer) >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.writeframesraw(bytes(self._buffer))
            self._buffer.clear()

    def close(self) -> int:
        """Finish the file; returns its size in bytes."""
        if not self.closed:
            self._flush()
            self._writer.close()
            self.closed = True
        return self.path.stat().st_size

    @property
    def duration(self) -> float:
        return self.samples / RATE
