"""What can be played, resolved into 8 kHz int16 audio: prompts, music on hold, tones, silence
and numbers spoken from a language's prompt set.

System prompts come from the Debian Asterisk sound packages (one directory per voice, e.g.
``en_US_f_Allison``, ``ru_RU_f_IvrvoiceRU``; a request's BCP 47 language picks the first
directory whose name starts with it). Music on hold is every file of a class directory, in
name order. Files are WAV (any PCM rate, mono or stereo), decoded once, resampled to 8 kHz with
the core resampler and kept in a bounded LRU cache: many legs hear the same greeting.

Loading reads files: the asyncio adapter calls :meth:`SoundLibrary.resolve` in a worker thread.
"""

from __future__ import annotations

import threading
import wave
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from callmesh_media.dsp.resample import resample, to_int16
from callmesh_media.dsp.tones import Cadence, ToneGenerator

RATE = 8000
Int16Array = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class PromptSource:
    name: str  # system sound ("vm-intro", "digits/5") or tenant prompt id ("tp_...")


@dataclass(frozen=True, slots=True)
class MusicSource:
    class_name: str


@dataclass(frozen=True, slots=True)
class ToneSource:
    frequencies: tuple[float, ...]
    level_dbm0: float
    on_seconds: float | None  # None: continuous
    off_seconds: float | None
    total_seconds: float | None  # None: until stopped


@dataclass(frozen=True, slots=True)
class SilenceSource:
    seconds: float


@dataclass(frozen=True, slots=True)
class SayNumber:
    number: int


@dataclass(frozen=True, slots=True)
class SayDigits:
    digits: str


@dataclass(frozen=True, slots=True)
class SayDuration:
    seconds: float


SoundSource = (
    PromptSource | MusicSource | ToneSource | SilenceSource | SayNumber | SayDigits | SayDuration
)


class SoundNotFound(Exception):
    """A source names nothing playable; ``str()`` is the PlayDone error ("prompt-not-found:x")."""


@dataclass(slots=True)
class ToneSegment:
    """An endless (or long) generated tone, read frame by frame instead of held in memory."""

    generator: ToneGenerator
    total_samples: int | None


Segment = Int16Array | ToneSegment

_DIGIT_FILES = {"*": "star", "#": "pound"}


def _safe_relative(name: str) -> bool:
    path = Path(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def read_wav(path: Path) -> Int16Array:
    """A PCM WAV file as 8 kHz mono int16 (stereo is averaged, other rates resampled)."""
    with wave.open(str(path), "rb") as reader:
        channels = reader.getnchannels()
        width = reader.getsampwidth()
        rate = reader.getframerate()
        raw = reader.readframes(reader.getnframes())
    if width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    elif width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0
    else:
        raise SoundNotFound(f"unsupported-wav:{path.name}:{8 * width}-bit")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != RATE:
        samples = resample(samples, rate, RATE)
    return to_int16(samples)


class SoundLibrary:
    def __init__(
        self,
        *,
        sounds_dir: Path,
        moh_dir: Path,
        tenant_prompts_dir: Path,
        default_language: str,
        cache_bytes: int = 64 << 20,
    ) -> None:
        self.sounds_dir = sounds_dir
        self.moh_dir = moh_dir
        self.tenant_prompts_dir = tenant_prompts_dir
        self.default_language = default_language
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[Path, Int16Array] = OrderedDict()
        self._cached_bytes = 0
        # resolve() runs in worker threads; the cache is shared between them.
        self._lock = threading.Lock()

    # -- files -----------------------------------------------------------------------------

    def _load(self, path: Path) -> Int16Array:
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None:
                self._cache.move_to_end(path)
                return cached
        audio = read_wav(path)
        audio.flags.writeable = False
        with self._lock:
            self._cache[path] = audio
            self._cached_bytes += audio.nbytes
            while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
                _, evicted = self._cache.popitem(last=False)
                self._cached_bytes -= evicted.nbytes
        return audio

    def language_dir(self, language: str) -> Path | None:
        """The voice directory for a BCP 47 tag: exact name, then by prefix (en-US, then en)."""
        tag = (language or self.default_language).replace("-", "_").lower()
        if not self.sounds_dir.is_dir():
            return None
        directories = sorted(p for p in self.sounds_dir.iterdir() if p.is_dir())
        for candidate in (tag, tag.split("_")[0]):
            for directory in directories:
                name = directory.name.lower()
                if name == candidate or name.startswith(candidate + "_"):
                    return directory
        return None

    def _prompt_path(self, name: str, language: str, tenant_id: str) -> Path:
        if not _safe_relative(name):
            raise SoundNotFound(f"prompt-not-found:{name}")
        if name.startswith("tp_"):
            if not _safe_relative(tenant_id):
                raise SoundNotFound(f"prompt-not-found:{name}")
            path = self.tenant_prompts_dir / tenant_id / f"{name}.wav"
            if path.is_file():
                return path
            raise SoundNotFound(f"prompt-not-found:{name}")
        directory = self.language_dir(language)
        if directory is not None:
            path = directory / f"{name}.wav"
            if path.is_file():
                return path
        raise SoundNotFound(f"prompt-not-found:{name}")

    def _music_files(self, class_name: str) -> list[Path]:
        if class_name in ("", "default"):
            directory = self.moh_dir
        elif _safe_relative(class_name):
            directory = self.moh_dir / class_name
        else:
            raise SoundNotFound(f"music-class-not-found:{class_name}")
        files = sorted(directory.glob("*.wav")) if directory.is_dir() else []
        if not files:
            raise SoundNotFound(f"music-class-not-found:{class_name or 'default'}")
        return files

    # -- sources ---------------------------------------------------------------------------

    def resolve(
        self, sources: list[SoundSource], *, language: str, tenant_id: str = ""
    ) -> list[Segment]:
        """Segments to play in order; SoundNotFound names the first source that cannot play."""
        segments: list[Segment] = []
        for source in sources:
            segments.extend(self._resolve_one(source, language or self.default_language, tenant_id))
        return segments

    def _resolve_one(self, source: SoundSource, language: str, tenant_id: str) -> list[Segment]:
        if isinstance(source, PromptSource):
            return [self._load(self._prompt_path(source.name, language, tenant_id))]
        if isinstance(source, MusicSource):
            return [self._load(path) for path in self._music_files(source.class_name)]
        if isinstance(source, SilenceSource):
            return [np.zeros(round(source.seconds * RATE), dtype=np.int16)]
        if isinstance(source, ToneSource):
            cadence = (
                Cadence((source.on_seconds, source.off_seconds))
                if source.on_seconds and source.off_seconds
                else None
            )
            generator = ToneGenerator(source.frequencies, source.level_dbm0, cadence, RATE)
            total = None if source.total_seconds is None else round(source.total_seconds * RATE)
            return [ToneSegment(generator, total)]
        names = self._say_names(source)
        return [self._load(self._prompt_path(name, language, tenant_id)) for name in names]

    @staticmethod
    def _say_names(source: SayNumber | SayDigits | SayDuration) -> list[str]:
        if isinstance(source, SayDigits):
            names = []
            for digit in source.digits:
                if digit.isdigit():
                    names.append(f"digits/{digit}")
                elif digit in _DIGIT_FILES:
                    names.append(f"digits/{_DIGIT_FILES[digit]}")
                else:
                    raise SoundNotFound(f"cannot-say-digit:{digit}")
            return names
        if isinstance(source, SayNumber):
            return number_prompts(source.number)
        minutes = max(1, round(source.seconds / 60))
        return [*number_prompts(minutes), "minute" if minutes == 1 else "minutes"]


def number_prompts(number: int) -> list[str]:
    """Prompt names that speak a cardinal number with the Asterisk digit files (English order)."""
    if number < 0:
        return ["digits/minus", *number_prompts(-number)]
    if number <= 20:
        return [f"digits/{number}"]
    if number < 100:
        tens, units = divmod(number, 10)
        return [f"digits/{tens * 10}"] + ([f"digits/{units}"] if units else [])
    for size, word in ((1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand")):
        if number >= size:
            high, rest = divmod(number, size)
            return [*number_prompts(high), f"digits/{word}"] + (
                number_prompts(rest) if rest else []
            )
    hundreds, rest = divmod(number, 100)
    return [f"digits/{hundreds}", "digits/hundred"] + (number_prompts(rest) if rest else [])
