"""Checkpoints: a directory with safetensors tensors and a JSON file for everything else. Never pickle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors in a nested structure by references into `tensors` (JSON-safe skeleton)."""
    if isinstance(obj, torch.Tensor):
        name = prefix or "value"
        tensors[name] = obj.detach().contiguous().cpu()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, "", {}) if not isinstance(k, (str, int)) else k,
                              _flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    return obj


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def save_state(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (nested dicts/lists of tensors and plain values) atomically to `directory`."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    seen: set[int] = set()
    for name, tensor in tensors.items():  # tied weights (e.g. embeddings = LM head) share memory: store copies
        if tensor.numel() and tensor.data_ptr() in seen:
            tensors[name] = tensor.clone()
        seen.add(tensor.data_ptr())
    save_file(tensors, str(tmp / "tensors.safetensors"))
    (tmp / "state.json").write_text(json.dumps(skeleton))
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def load_state(directory: str | Path) -> dict[str, Any]:
    """Inverse of `save_state`."""
    directory = Path(directory)
    if not (directory / "state.json").exists():
        raise FileNotFoundError(f"{directory}: not a checkpoint (state.json missing)")
    tensors = load_file(str(directory / "tensors.safetensors"))
    return _unflatten(json.loads((directory / "state.json").read_text()), tensors)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The highest-step `step-XXXXXXX` checkpoint under `directory`, if any."""
    directory = Path(directory)
    found = sorted(p for p in directory.glob("step-*") if (p / "state.json").exists()) if directory.exists() else []
    return found[-1] if found else None
