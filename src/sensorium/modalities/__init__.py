"""Modalities: one file per modality, each registering itself; import this package to get them all."""

from . import audio, image, text  # noqa: F401  (registration side effects)
from .audio import SAMPLE_RATE, Waveform
from .registry import DecodeError, Modality, decode_member, for_extension, get, names, register

__all__ = ["DecodeError", "Modality", "SAMPLE_RATE", "Waveform", "decode_member", "for_extension", "get",
           "names", "register"]
