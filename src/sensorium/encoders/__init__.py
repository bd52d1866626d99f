"""Pretrained unimodal encoders ("towers") by name: `build_tower("minilm-l6")`. Each module registers its own
names when this package is imported. Encoders backed by checkpoint directories (`hf-clip-image:PATH`, ...) are
registered by `sensorium.interop`, which re-exports `build_tower` with them included."""

from __future__ import annotations

from sensorium.encoders import bert, efficientnet, patches, speech  # noqa: F401  (registration side effects)
from sensorium.encoders.base import Tower, build_tower, register_tower, tower_names

__all__ = ["Tower", "build_tower", "register_tower", "tower_names"]
