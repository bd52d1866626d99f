"""Checkpoint formats: HF transformers (CLIP, SigLIP, Llama-family, Whisper), open_clip and Sensorium's own
dual-encoder (`sensorium train clip`) directories loaded into Sensorium's own modules and written back (`load_pretrained`, `export_pretrained`), and encoders backed by such
directories (`hf-clip-image:PATH`, ...) registered in the encoder registry; `build_tower` here sees them all."""

from __future__ import annotations

from sensorium.core.files import CheckpointError
from sensorium.encoders import build_tower, tower_names
from sensorium.interop import (  # noqa: F401  (they register themselves)
    encoders,
    hf_clip,
    hf_llama,
    hf_whisper,
    openclip,
    sensorium_clip,
)
from sensorium.interop.pretrained import Pretrained, detect_family, export_pretrained, load_pretrained

__all__ = ["CheckpointError", "Pretrained", "build_tower", "detect_family", "export_pretrained", "load_pretrained",
           "tower_names"]
