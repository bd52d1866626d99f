"""Reading and writing checkpoint directories: JSON configs, safetensors (single or sharded), and
pickle-only `.bin` files (refused unless the caller allows them, then `weights_only=True`); key renaming
between a library's layout and Sensorium's; strict loading whose errors name the file and the tensors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

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
        from safetensors.torch import load_file

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
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path), metadata={"format": "pt"})


def _template_regex(template: str) -> re.Pattern[str]:
    """'a.{i}.b.{p}' -> a regex where each {name} matches one dotted component."""
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(f"(?P<{p[1:-1]}>[^.]+)" if p.startswith("{") else re.escape(p) for p in parts))


def rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    """Map `key` by the first (source, target) template pair that matches it, e.g.
    ('layers.{i}.fc1.{p}', 'blocks.{i}.mlp.fc1.{p}'); None when no rule matches."""
    for source, target in rules:
        m = _template_regex(source).fullmatch(key)
        if m:
            return target.format(**m.groupdict())
    return None


def invert(rules: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The same rules read the other way round (for exporting back)."""
    return [(target, source) for source, target in rules]


def rename_all(state: Mapping[str, torch.Tensor], rules: list[tuple[str, str]], source: str,
               ignore: Callable[[str], bool] = lambda k: False) -> StateDict:
    """Rename every tensor; unknown names (not ignored) are an error listing them with the source file."""
    out: StateDict = {}
    unknown = []
    for key, value in state.items():
        new = rename(key, rules)
        if new is None:
            if not ignore(key):
                unknown.append(key)
            continue
        out[new] = value
    if unknown:
        raise CheckpointError(f"{source}: unexpected tensors {_preview(unknown)}")
    return out


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
              source_name: Callable[[str], str] = lambda k: k) -> nn.Module:
    """Strictly copy `state` into `model`: missing, unexpected and mis-shaped tensors raise an error
    naming them (by `source_name`, the checkpoint's own name) and the file."""
    expected = model.state_dict()
    missing = [source_name(k) for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{source_name(k)} {tuple(state[k].shape)} (model expects {tuple(v.shape)})"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{label} {_preview(names)}" for label, names in
                (("missing tensors", missing), ("unexpected tensors", unexpected), ("shape mismatch", shapes)) if names]
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{f', ... ({len(names) - limit} more)' if len(names) > limit else ''}]"


def split_qkv(state: StateDict) -> StateDict:
    """Split fused `*.qkv.{weight,bias}` tensors (equal thirds) into `*.q`, `*.k`, `*.v`."""
    out: StateDict = {}
    for key, value in state.items():
        stem, _, param = key.rpartition(".")
        if stem.endswith(".qkv"):
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{stem[:-3]}{name}.{param}"] = part
        else:
            out[key] = value
    return out


def fuse_qkv(state: StateDict, prefix: str = "") -> StateDict:
    """Inverse of `split_qkv`: each `X.q.P`, `X.k.P`, `X.v.P` triple (X starting with `prefix`) -> `X.qkv.P`."""
    out = dict(state)
    for key in list(state):
        stem, _, param = key.rpartition(".")
        if not stem.endswith(".q") or not key.startswith(prefix):
            continue
        names = [f"{stem[:-1]}{n}.{param}" for n in "qkv"]
        if all(n in out for n in names):
            out[f"{stem[:-1]}qkv.{param}"] = torch.cat([out.pop(n) for n in names])
    return out
