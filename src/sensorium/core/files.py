"""Files Sensorium reads and writes: JSON configs, tensors (safetensors; pickle only when the caller allows it,
then `weights_only=True`), and state directories (safetensors + a JSON skeleton + a manifest of file sizes and
SHA-256 hashes) written atomically and verified when read. Errors name the file and say what to do."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

MANIFEST = "manifest.json"

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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); the file is damaged or truncated, restore or "
                              f"re-create it") from None


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
        return read_safetensors(path)
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


def check_safetensors(path: str | Path) -> None:
    """Raise CheckpointError unless `path` is a complete safetensors file: its header parses and the tensor data it
    describes fits the file's size exactly (a truncated or padded file fails)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header); re-create it")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file (header of {n} bytes in a "
                                  f"{size}-byte file); re-create it")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: corrupt safetensors header; re-create the file") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header; re-create the file")
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2]
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({size} bytes, the header describes "
                              f"{expected}); re-create it")


def read_safetensors(path: str | Path) -> StateDict:
    """All tensors of a safetensors file; a truncated or corrupt file is a CheckpointError naming it."""
    check_safetensors(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read safetensors file ({exc}); re-create it") from None


def read_state_dict(root: str | Path, names: Iterable[str], allow_pickle: bool = False) -> tuple[StateDict, str]:
    """All tensors of a checkpoint directory and a description of the files read."""
    files = weight_files(Path(root), names)
    state: StateDict = {}
    for path in files:
        state.update(read_tensors(path, allow_pickle))
    return state, ", ".join(str(p) for p in files)


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write a safetensors file atomically (a `.tmp` sibling renamed over the target when complete), so a crash
    or a full disk never leaves a truncated file under the real name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata else None)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file atomically (a `.tmp` sibling renamed over the target)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex): what derived state and checkpoints record to know their source."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(directory: Path) -> dict[str, Any]:
    """Record size and SHA-256 of every file in `directory` (but the manifest) in its manifest.json."""
    files = {p.name: {"size": p.stat().st_size, "sha256": file_digest(p)}
             for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": "sensorium-state/1", "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def verify_directory(directory: str | Path, hashes: bool = True) -> None:
    """Raise CheckpointError naming the first file of `directory` whose size or SHA-256 differs from its manifest
    (or that is missing). A directory without a manifest (written before manifests existed) passes."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return
    manifest = read_json(manifest_path)
    for name, expected in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (the manifest lists it)")
        size = path.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(f"{path}: {size} bytes, the manifest recorded {expected['size']} (truncated or "
                                  f"overwritten)")
        if hashes and file_digest(path) != expected["sha256"]:
            raise CheckpointError(f"{path}: content differs from the SHA-256 recorded at save (corrupt)")


def save_state(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (nested dicts/lists of tensors and plain values) atomically to `directory`: files go to a
    `.tmp` sibling with a manifest of their sizes and hashes, which is renamed into place only when complete. A
    failure (disk full) removes the `.tmp` and leaves any earlier checkpoint as it was."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        tensors: dict[str, torch.Tensor] = {}
        skeleton = _flatten(state, "", tensors)
        seen: set[int] = set()
        for name, tensor in tensors.items():  # tied weights (e.g. embeddings = LM head) share memory: store copies
            if tensor.numel() and tensor.data_ptr() in seen:
                tensors[name] = tensor.clone()
            seen.add(tensor.data_ptr())
        save_file(tensors, str(tmp / "tensors.safetensors"))
        (tmp / "state.json").write_text(json.dumps(skeleton))
        write_manifest(tmp)
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            if old.exists():
                shutil.rmtree(old)
            directory.rename(old)
        tmp.rename(directory)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"could not write {directory} ({exc.strerror or exc}); nothing was replaced, "
                                     f"earlier checkpoints are intact") from exc
        raise
    return directory


def load_state(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """Inverse of `save_state`; with `verify`, every file is checked against the manifest (size and SHA-256) and
    the safetensors header first. A damaged directory is a CheckpointError naming the file."""
    directory = Path(directory)
    if not (directory / "state.json").exists():
        raise FileNotFoundError(f"{directory}: not a checkpoint (state.json missing)")
    if verify:
        verify_directory(directory)
    tensors = read_safetensors(directory / "tensors.safetensors")
    skeleton = read_json(directory / "state.json")
    try:
        return _unflatten(skeleton, tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory / 'state.json'}: does not match tensors.safetensors ({exc!r})") from None
