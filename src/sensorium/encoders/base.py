"""Towers are frozen unimodal encoders: `prepare` turns decoded values (str, PIL image, Waveform) into
tensors, `forward` maps them to one feature vector per sample. A registry builds them by name."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn


class Tower(nn.Module):
    """A pretrained encoder for one modality with its own preprocessing."""

    name: str = "tower"
    modality: str = ""
    dim: int = 0

    def prepare(self, values: Sequence[Any]) -> Any:
        """Decoded values -> model inputs (a Tensor or dict of Tensors) on CPU."""
        raise NotImplementedError

    def forward(self, inputs: Any) -> torch.Tensor:  # noqa: D401
        """Model inputs -> features [B, dim]."""
        raise NotImplementedError

    @property
    def token_dim(self) -> int:
        """Width of the per-token features that `tokens` returns (the pooled `dim` unless a tower says otherwise)."""
        return self.dim

    def tokens(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs -> token features [B, T, token_dim] and a mask [B, T] (True = real token), for decoders that
        read a sequence (projectors into a language model). Default: the pooled vector as one token."""
        pooled = self(inputs)
        return pooled[:, None], torch.ones(pooled.shape[0], 1, dtype=torch.bool, device=pooled.device)

    def describe(self) -> dict[str, Any]:
        """What a run's config records about this tower."""
        return {"name": self.name, "modality": self.modality, "dim": self.dim}

    @torch.inference_mode()
    def encode(self, values: Sequence[Any], batch_size: int = 64, device: str | torch.device = "cpu") -> torch.Tensor:
        """Features for a list of values, batched, as float32 on CPU."""
        self.eval().to(device)
        out = []
        for start in range(0, len(values), batch_size):
            inputs = to_device(self.prepare(values[start:start + batch_size]), device)
            out.append(self(inputs).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)


def to_device(inputs: Any, device: str | torch.device) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    return inputs


_TOWERS: dict[str, Callable[..., Tower]] = {}


def register_tower(name: str) -> Callable[[Callable[..., Tower]], Callable[..., Tower]]:
    """Decorator: register a tower factory under `name`."""

    def wrap(factory: Callable[..., Tower]) -> Callable[..., Tower]:
        if name in _TOWERS:
            raise ValueError(f"tower {name!r} is already registered")
        _TOWERS[name] = factory
        return factory

    return wrap


def build_tower(name: str, **kwargs: Any) -> Tower:
    """Instantiate a registered tower by name; `NAME:PATH` (e.g. `hf-clip-image:ckpt/clip-b32`) passes
    `path=PATH` to a checkpoint tower, so name-only configs can point at a local checkpoint."""
    if name not in _TOWERS and ":" in name:
        name, _, kwargs["path"] = name.partition(":")
    if name not in _TOWERS:
        hint = "" if "hf-clip" in _TOWERS else " (checkpoint-backed towers register when sensorium.interop is imported)"
        raise KeyError(f"unknown tower {name!r}; registered: {', '.join(sorted(_TOWERS))}{hint}")
    return _TOWERS[name](**kwargs)


def tower_names() -> list[str]:
    return sorted(_TOWERS)
