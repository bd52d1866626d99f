"""Dual-encoder model sizes as files: each `configs/clip/<name>.yaml` recipe holds an open_clip model config
(`model: {embed_dim, vision_cfg, text_cfg}`, or the name of another such file). `model_cfg(name)` reads it and
`clip_config(name)` turns it into Sensorium's DualEncoderConfig (fused QKV), so the open_clip dimensions live in
one place that `sensorium train clip`, the benchmarks and the tests all read."""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import yaml

from sensorium.interop.openclip import openclip_config
from sensorium.models.dual_encoder import DualEncoderConfig

# configs/clip of the checkout (src/sensorium/train/ -> the repository root); SENSORIUM_CONFIGS points elsewhere
CONFIG_DIR = Path(os.environ.get("SENSORIUM_CONFIGS") or Path(__file__).resolve().parents[3] / "configs") / "clip"


def model_names() -> list[str]:
    """The recipe files under configs/clip (names without .yaml)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []


def recipe_path(name: str | Path) -> Path:
    """`name` as a YAML file: a path that exists, or configs/clip/<name>.yaml; an error listing the names."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    found = CONFIG_DIR / f"{name}.yaml"
    if not found.is_file():
        known = ", ".join(model_names()) or f"none: {CONFIG_DIR} is missing (set SENSORIUM_CONFIGS)"
        raise ValueError(f"unknown model {str(name)!r}; known: {known} (files in {CONFIG_DIR})")
    return found


@functools.lru_cache(maxsize=None)
def _read_model(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, str):
        target = recipe_path(model).resolve()
        if target in seen or target == path:
            raise ValueError(f"{path}: model {model!r} refers back to itself")
        return _read_model(target, (*seen, path))
    if not isinstance(model, dict) or "embed_dim" not in model:
        raise ValueError(f"{path}: no `model:` mapping with embed_dim, vision_cfg and text_cfg (open_clip's model "
                         f"config) or the name of another configs/clip file")
    return model


def model_cfg(name: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The open_clip model config of `name` (a configs/clip name or YAML path; a mapping is returned as is), a
    copy the caller may change."""
    if isinstance(name, dict):
        if isinstance(name.get("embed_dim"), int):
            return copy.deepcopy(name)
        raise ValueError(f"model config {name!r}: expected open_clip's embed_dim, vision_cfg and text_cfg")
    return copy.deepcopy(_read_model(recipe_path(name).resolve()))


def clip_config(name: str | Path | dict[str, Any]) -> DualEncoderConfig:
    """DualEncoderConfig with the dimensions of `name` (see `model_cfg`), fused QKV projections."""
    cfg = openclip_config(model_cfg(name), str(name) if not isinstance(name, dict) else "model")
    cfg.vision.transformer.fused_qkv = cfg.text.transformer.fused_qkv = True
    return cfg
