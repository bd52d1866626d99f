"""Pretrained unimodal encoders Sensorium can load, by name (see `build_tower`)."""

from __future__ import annotations

import importlib

from .base import MissingDependency, Tower, build_tower, register_tower, require, tower_names

# Modules whose import registers towers. Each file registers its own names.
_BUILTIN_MODULES: list[str] = [
    "bert",
    "efficientnet",
    "speech",
]
for _module in _BUILTIN_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
BUILTIN = tuple(_BUILTIN_MODULES)

__all__ = ["MissingDependency", "Tower", "build_tower", "register_tower", "require", "tower_names"]
