"""Conference mixing, batched across rooms with numpy.

Every participant hears the sum of the *other* speaking participants in their room, saturated
to int16. Computed as "room total minus own contribution", so a room of N costs O(N) rather
than O(N^2), and all rooms of a media replica are mixed in one call: participants are rows of
one (P, frame) array and rooms are contiguous runs of rows.

Flags per participant:
* ``muted`` / ``listen_only``: contributes nothing, still hears the room. (Kept separate
  because they mean different things to the API: a moderator's mute vs a role.)
* ``whisper_to``: this participant's audio goes to exactly one other participant (a supervisor
  coaching an agent) and not to the room; the whisperer still hears the room.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class MixLayout:
    """Arrays describing P participants in R rooms; rows of a room are contiguous."""

    room_starts: IntArray  # (R,) first row of each room
    room_of: IntArray  # (P,) room index of each row
    speaks: BoolArray  # (P,) contributes to its room
    whisper_target: IntArray  # (P,) row this participant whispers to, or -1

    @property
    def participants(self) -> int:
        return len(self.room_of)

    @classmethod
    def uniform(cls, rooms: int, size: int) -> MixLayout:
        """R rooms of ``size`` speaking participants each (benchmarks, tests)."""
        room_of = np.repeat(np.arange(rooms), size)
        return cls(
            room_starts=np.arange(rooms) * size,
            room_of=room_of,
            speaks=np.ones(rooms * size, dtype=bool),
            whisper_target=np.full(rooms * size, -1, dtype=np.intp),
        )


def mix(frames: npt.ArrayLike, layout: MixLayout) -> Int16Array:
    """(P, N) int16 frames in, (P, N) int16 frames out: what each participant hears."""
    x = np.asarray(frames)
    if x.dtype != np.int16 or x.ndim != 2 or x.shape[0] != layout.participants:
        raise ValueError("frames must be int16 of shape (participants, samples)")
    if layout.participants == 0:
        return x.copy()
    wide = x.astype(np.int32)
    to_room = layout.speaks & (layout.whisper_target < 0)
    contribution = np.where(to_room[:, None], wide, 0)
    # Room totals from a running sum over rows (rooms are contiguous runs of rows): much
    # cheaper than np.add.reduceat on many small segments. int32 may wrap inside the running
    # sum, but two's-complement differences are exact as long as a room's own total fits.
    running = np.zeros((len(x) + 1, x.shape[1]), dtype=np.int32)
    np.cumsum(contribution, axis=0, out=running[1:])
    room_ends = np.append(layout.room_starts[1:], len(x))
    room_totals = running.take(room_ends, axis=0) - running.take(layout.room_starts, axis=0)
    out = room_totals.take(layout.room_of, axis=0) - contribution
    whisperers = np.flatnonzero(layout.speaks & (layout.whisper_target >= 0))
    if whisperers.size:
        np.add.at(out, layout.whisper_target[whisperers], wide[whisperers])
    np.clip(out, -32768, 32767, out=out)
    return out.astype(np.int16)


@dataclass(slots=True)
class Participant:
    participant_id: str
    muted: bool = False
    listen_only: bool = False
    whisper_to: str | None = None


@dataclass(slots=True)
class ConferenceRoom:
    room_id: str
    participants: dict[str, Participant] = field(default_factory=dict)

    def join(self, participant_id: str, *, listen_only: bool = False) -> Participant:
        participant = Participant(participant_id, listen_only=listen_only)
        self.participants[participant_id] = participant
        return participant

    def leave(self, participant_id: str) -> None:
        self.participants.pop(participant_id, None)
        for other in self.participants.values():
            if other.whisper_to == participant_id:
                other.whisper_to = None

    def set_muted(self, participant_id: str, muted: bool) -> None:
        self.participants[participant_id].muted = muted

    def set_listen_only(self, participant_id: str, listen_only: bool) -> None:
        self.participants[participant_id].listen_only = listen_only

    def whisper(self, participant_id: str, target_id: str | None) -> None:
        if target_id is not None and target_id not in self.participants:
            raise KeyError(f"{target_id} is not in room {self.room_id}")
        if target_id == participant_id:
            raise ValueError("a participant cannot whisper to themself")
        self.participants[participant_id].whisper_to = target_id


def build_layout(rooms: Sequence[ConferenceRoom]) -> tuple[MixLayout, list[str]]:
    """Layout for these rooms plus the participant id of each row (keep both until rooms change)."""
    order: list[str] = []
    starts: list[int] = []
    room_of: list[int] = []
    speaks: list[bool] = []
    targets: list[str | None] = []
    row_of: dict[str, int] = {}
    for room_index, room in enumerate(rooms):
        if not room.participants:
            continue
        starts.append(len(order))
        for participant in room.participants.values():
            row_of[f"{room_index}/{participant.participant_id}"] = len(order)
            order.append(participant.participant_id)
            room_of.append(len(starts) - 1)
            speaks.append(not (participant.muted or participant.listen_only))
            targets.append(
                None if participant.whisper_to is None else f"{room_index}/{participant.whisper_to}"
            )
    layout = MixLayout(
        room_starts=np.asarray(starts, dtype=np.intp),
        room_of=np.asarray(room_of, dtype=np.intp),
        speaks=np.asarray(speaks, dtype=bool),
        whisper_target=np.asarray([-1 if t is None else row_of[t] for t in targets], dtype=np.intp),
    )
    return layout, order


def mix_rooms(
    rooms: Sequence[ConferenceRoom], frames: Mapping[str, Int16Array], samples: int = 160
) -> dict[str, Int16Array]:
    """Convenience wrapper: frames by participant id in, frames by participant id out.

    A participant with no frame this tick (nothing arrived, jitter buffer filling) counts as
    silence. Participant ids must be unique across the rooms passed in.
    """
    layout, order = build_layout(rooms)
    stacked = np.zeros((len(order), samples), dtype=np.int16)
    for row, participant_id in enumerate(order):
        frame = frames.get(participant_id)
        if frame is not None:
            stacked[row] = frame
    mixed = mix(stacked, layout)
    return {participant_id: mixed[row] for row, participant_id in enumerate(order)}
