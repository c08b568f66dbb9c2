"""A playback: resolved audio segments read out one 20 ms frame per media tick.

Sans-I/O: the engine calls :meth:`Playback.read` from its tick and decides where the frame
goes (one endpoint, both legs of a bridge, or every participant of a conference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callmesh_media.sounds import Segment, ToneSegment

FRAME = 160
Int16Array = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class PlayTarget:
    kind: str  # "endpoint", "bridge" or "conference"
    target_id: str


class Playback:
    def __init__(
        self,
        play_id: str,
        target: PlayTarget,
        segments: list[Segment],
        *,
        times: int = 1,
        loop_forever: bool = False,
        stop_on_dtmf: bool = False,
        max_seconds: float | None = None,
        error: str = "",
    ) -> None:
        self.play_id = play_id
        self.target = target
        self.segments = segments
        self.times = max(1, times)
        self.loop_forever = loop_forever
        self.stop_on_dtmf = stop_on_dtmf
        self.max_samples = None if max_seconds is None else round(max_seconds * 8000)
        self.error = error  # set: the playback ends at once with this error
        self.samples_played = 0
        self._round = 0
        self._segment = 0
        self._offset = 0
        self._tone_read = 0
        # Nothing playable at all would loop forever producing nothing: treat as empty.
        self._empty = not any(isinstance(s, ToneSegment) or len(s) > 0 for s in segments)

    @property
    def hit_max_duration(self) -> bool:
        return self.max_samples is not None and self.samples_played >= self.max_samples

    def read(self) -> Int16Array | None:
        """The next frame (zero-padded at the very end), or None when everything has played."""
        if self._empty or self.hit_max_duration:
            return None
        frame = np.zeros(FRAME, dtype=np.int16)
        filled = 0
        while filled < FRAME:
            if self._segment >= len(self.segments):
                self._round += 1
                if not self.loop_forever and self._round >= self.times:
                    break
                self._segment = self._offset = self._tone_read = 0
            segment = self.segments[self._segment]
            if isinstance(segment, ToneSegment):
                want = FRAME - filled
                if segment.total_samples is not None:
                    want = min(want, segment.total_samples - self._tone_read)
                if want > 0:
                    chunk = segment.generator.read(want)
                    frame[filled : filled + want] = np.clip(np.rint(chunk), -32768, 32767)
                    filled += want
                    self._tone_read += want
                if segment.total_samples is not None and self._tone_read >= segment.total_samples:
                    self._segment += 1
                    self._tone_read = 0
                continue
            take = min(FRAME - filled, len(segment) - self._offset)
            frame[filled : filled + take] = segment[self._offset : self._offset + take]
            filled += take
            self._offset += take
            if self._offset >= len(segment):
                self._segment += 1
                self._offset = 0
        if filled == 0:
            return None
        self.samples_played += filled
        return frame
