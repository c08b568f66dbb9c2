from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from callmesh_media.dsp.analysis import band_power_fraction
from callmesh_media.dsp.goertzel import tone_powers
from callmesh_media.dsp.levels import dbm0_to_power, power_to_dbm0
from callmesh_media.dsp.mixer import ConferenceRoom, MixLayout, build_layout, mix, mix_rooms
from callmesh_media.dsp.resample import to_int16
from callmesh_media.dsp.tones import ToneGenerator

FRAME = 160
TONES = {"alice": 500.0, "bob": 800.0, "carol": 1300.0, "dave": 1900.0, "eve": 2600.0}


def levels_heard(audio: npt.NDArray[np.int16]) -> dict[str, float]:
    """Level in dBm0 of each participant's tone inside ``audio``."""
    powers = tone_powers(audio[None, :].astype(np.float64), tuple(TONES.values()))[0]
    return {name: power_to_dbm0(float(p)) for name, p in zip(TONES, powers, strict=True)}


def run_room(rooms: list[ConferenceRoom], seconds: float = 0.5) -> dict[str, npt.NDArray[np.int16]]:
    generators = {name: ToneGenerator([f], -15.0) for name, f in TONES.items()}
    heard: dict[str, list[npt.NDArray[np.int16]]] = {}
    for _ in range(int(seconds * 8000 / FRAME)):
        frames = {name: to_int16(g.read(FRAME)) for name, g in generators.items()}
        for participant, frame in mix_rooms(rooms, frames).items():
            heard.setdefault(participant, []).append(frame)
    return {participant: np.concatenate(parts) for participant, parts in heard.items()}


def test_three_party_room_each_hears_the_other_two_and_not_themself() -> None:
    room = ConferenceRoom("r1")
    for name in ("alice", "bob", "carol"):
        room.join(name)
    heard = run_room([room])
    for listener in ("alice", "bob", "carol"):
        levels = levels_heard(heard[listener])
        for speaker in ("alice", "bob", "carol"):
            if speaker == listener:
                assert levels[speaker] < -60.0, (listener, levels)
            else:
                assert levels[speaker] == pytest.approx(-15.0, abs=0.2), (listener, levels)
        # Nothing else in the mix: the two tones carry all of the power.
        others = [s for s in ("alice", "bob", "carol") if s != listener]
        in_tones = sum(band_power_fraction(heard[listener], TONES[s]) for s in others)
        assert in_tones > 0.99


def test_mute_listen_only_and_whisper() -> None:
    room = ConferenceRoom("r1")
    for name in ("alice", "bob", "carol"):
        room.join(name)
    room.join("dave", listen_only=True)  # a silent monitor
    room.join("eve")  # a supervisor
    room.set_muted("bob", True)
    room.whisper("eve", "alice")  # coaching alice only
    heard = {name: levels_heard(audio) for name, audio in run_room([room]).items()}
    audible = {
        name: {s for s, level in levels.items() if level > -30.0} for name, levels in heard.items()
    }
    assert audible["alice"] == {"carol", "eve"}  # bob muted, dave listen-only, eve whispers
    assert audible["bob"] == {"alice", "carol"}  # a muted participant still hears the room
    assert audible["carol"] == {"alice"}
    assert audible["dave"] == {"alice", "carol"}
    assert audible["eve"] == {"alice", "carol"}  # the whisperer hears the room
    room.leave("alice")
    assert room.participants["eve"].whisper_to is None


def test_many_rooms_in_one_batched_call_stay_separate() -> None:
    rooms = [ConferenceRoom(f"room{i}") for i in range(2)]
    rooms[0].join("alice")
    rooms[0].join("bob")
    rooms[1].join("carol")
    rooms[1].join("dave")
    rooms[1].join("eve")
    heard = {name: levels_heard(audio) for name, audio in run_room(rooms).items()}
    assert {s for s, v in heard["alice"].items() if v > -30} == {"bob"}
    assert {s for s, v in heard["carol"].items() if v > -30} == {"dave", "eve"}


def test_saturation_instead_of_wrap_around() -> None:
    layout = MixLayout.uniform(rooms=1, size=3)
    loud = np.full((3, FRAME), 30000, dtype=np.int16)
    loud[2] = -30000
    out = mix(loud, layout)
    assert out[0].tolist() == [0] * FRAME  # 30000 + -30000
    assert out[2].tolist() == [32767] * FRAME  # 60000 saturates, does not wrap negative
    loud[:] = -30000
    assert mix(loud, layout)[1].tolist() == [-32768] * FRAME


def test_batched_layout_matches_room_by_room_mixing() -> None:
    rng = np.random.default_rng(2)
    sizes = [3, 5, 2, 4]
    rooms = []
    for r, size in enumerate(sizes):
        room = ConferenceRoom(f"r{r}")
        for p in range(size):
            room.join(f"r{r}p{p}")
        rooms.append(room)
    rooms[1].set_muted("r1p0", True)
    rooms[3].whisper("r3p3", "r3p1")
    layout, order = build_layout(rooms)
    frames = rng.integers(-8000, 8000, (len(order), FRAME)).astype(np.int16)
    batched = mix(frames, layout)
    by_id = dict(zip(order, frames, strict=True))
    for room in rooms:
        for listener in room.participants.values():
            expected = np.zeros(FRAME, dtype=np.int64)
            for speaker in room.participants.values():
                if speaker is listener or speaker.muted or speaker.listen_only:
                    continue
                if speaker.whisper_to not in (None, listener.participant_id):
                    continue
                expected += by_id[speaker.participant_id]
            row = order.index(listener.participant_id)
            assert batched[row].tolist() == np.clip(expected, -32768, 32767).tolist()


def test_bad_input_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="int16"):
        mix(np.zeros((2, FRAME), dtype=np.float32), MixLayout.uniform(1, 2))
    assert dbm0_to_power(0.0) > 0
