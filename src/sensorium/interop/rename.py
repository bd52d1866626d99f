"""Key renaming between a library's checkpoint layout and Sensorium's modules, QKV fusing and splitting, and
strict loading whose errors name the file and the tensors."""

from __future__ import annotations

import re
from typing import Callable, Mapping

import torch
from torch import nn

from sensorium.core.files import CheckpointError, StateDict


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
