"""Pretrained unimodal encoders Sensorium can load, by name (see `build_tower`), and checkpoint
directories (HF transformers and open_clip layouts) loaded into Sensorium's own modules."""

from __future__ import annotations

import importlib

from .base import MissingDependency, Tower, build_tower, register_tower, require, tower_names
from .checkpoint import CheckpointError
from .pretrained import Pretrained, detect_family, export_pretrained, load_pretrained

# Modules whose import registers towers. Each file registers its own names.
_BUILTIN_MODULES: list[str] = [
    "bert",
    "checkpoint_towers",
    "efficientnet",
    "patches",
    "speech",
]
for _module in _BUILTIN_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
BUILTIN = tuple(_BUILTIN_MODULES)

__all__ = ["CheckpointError", "MissingDependency", "Pretrained", "Tower", "build_tower", "detect_family",
           "export_pretrained", "load_pretrained", "register_tower", "require", "tower_names"]
