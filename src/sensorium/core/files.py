"""Files Sensorium reads and writes: JSON configs, tensors (safetensors; pickle only when the caller allows it,
then `weights_only=True`), and state directories (safetensors + a JSON skeleton) written atomically. Errors name
the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors.torch import load_file, save_file

StateDict = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint directory cannot be loaded: the message names the file and the offending tensors."""


def read_json(path: str | Path) -> dict[str, Any]:
    """Parse a JSON config, with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: config file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write a JSON config, indented and key-sorted for readable diffs."""
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def weight_files(root: Path, names: Iterable[str]) -> list[Path]:
    """The first of `names` present in `root`; a `*.index.json` entry expands to its shard files."""
    for name in names:
        path = root / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(read_json(path).get("weight_map", {}).values()))
            missing = [s for s in shards if not (root / s).is_file()]
            if missing:
                raise CheckpointError(f"{path}: shard files missing: {', '.join(missing)}")
            return [root / s for s in shards]
        return [path]
    raise CheckpointError(f"{root}: no weights found (looked for {', '.join(names)})")


def read_tensors(path: Path, allow_pickle: bool = False) -> StateDict:
    """Tensors of one weights file; pickle files only with `allow_pickle`, and then `weights_only=True`."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if not allow_pickle:
        raise CheckpointError(f"{path}: pickle checkpoint refused (it could run code); convert it to "
                              f"safetensors, or pass allow_pickle=True / --allow-pickle to load it with "
                              f"torch.load(weights_only=True)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise CheckpointError(f"{path}: cannot be read with torch.load(weights_only=True): {exc}") from None
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}


def read_state_dict(root: str | Path, names: Iterable[str], allow_pickle: bool = False) -> tuple[StateDict, str]:
    """All tensors of a checkpoint directory and a description of the files read."""
    files = weight_files(Path(root), names)
    state: StateDict = {}
    for path in files:
        state.update(read_tensors(path, allow_pickle))
    return state, ", ".join(str(p) for p in files)


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write tensors as safetensors (contiguous copies; tied tensors are written once per name)."""
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path), metadata={"format": "pt"})


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
