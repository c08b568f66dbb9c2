"""Sans-I/O DSP: G.711, resampling, tones, DTMF and fax tone detection, conference mixing.

Everything here works on numpy arrays of 8 kHz samples (int16 or float64 in int16 scale) and
keeps its own state; nothing reads a clock or touches I/O.
"""

from callmesh_media.dsp.dtmf import (
    DtmfDetection,
    DtmfDetector,
    DtmfDigitEnded,
    DtmfThresholds,
    detect_many,
)
from callmesh_media.dsp.fax import FaxToneDetected, FaxToneDetector
from callmesh_media.dsp.g711 import PCMA, PCMU, G711Codec, transcode
from callmesh_media.dsp.mixer import ConferenceRoom, MixLayout, build_layout, mix, mix_rooms
from callmesh_media.dsp.resample import resample, to_int16
from callmesh_media.dsp.tones import ToneGenerator, dtmf_tone, tone

__all__ = [
    "PCMA",
    "PCMU",
    "ConferenceRoom",
    "DtmfDetection",
    "DtmfDetector",
    "DtmfDigitEnded",
    "DtmfThresholds",
    "FaxToneDetected",
    "FaxToneDetector",
    "G711Codec",
    "MixLayout",
    "ToneGenerator",
    "build_layout",
    "detect_many",
    "dtmf_tone",
    "mix",
    "mix_rooms",
    "resample",
    "to_int16",
    "tone",
    "transcode",
]
