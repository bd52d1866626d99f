"""Modalities: one file per modality, each registering itself; import this package to get them all."""

from . import audio, depth, image, qa, segmentation, tabular, text, timeseries, video  # noqa: F401  (registration)
from .audio import SAMPLE_RATE, Waveform
from .registry import DecodeError, Modality, decode_member, for_extension, get, names, register
from .video import Clip

__all__ = ["Clip", "DecodeError", "Modality", "SAMPLE_RATE", "Waveform", "decode_member", "for_extension", "get",
           "names", "register"]
