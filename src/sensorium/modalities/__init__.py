"""Modalities: one file per modality, each registering itself; import this package to get them all."""

# Registration order is the order batches, reports and contact sheets list modalities in.
from sensorium.modalities import image, text, audio  # noqa: F401,I001  (registration side effects)
from sensorium.modalities import depth, segmentation, video, timeseries, tabular, qa  # noqa: F401,I001
from sensorium.modalities.audio import SAMPLE_RATE, Waveform
from sensorium.modalities.registry import DecodeError, Modality, decode_member, for_extension, get, names, register
from sensorium.modalities.video import Clip

__all__ = ["Clip", "DecodeError", "Modality", "SAMPLE_RATE", "Waveform", "decode_member", "for_extension", "get",
           "names", "register"]
