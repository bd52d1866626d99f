"""Helpers of the fault-injection suite: small shards with known content, cheap deterministic towers (registered as
`fault-image` / `fault-text`, so a run directory can name them), ways to damage a file, and a tiny trainer."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from sensorium.encoders.base import Tower, register_tower, tower_names
from sensorium.train.trainer import TrainConfig

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def png(colour: tuple[int, int, int], size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def wav(freq: float, n: int = 1600, rate: int = 16000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, captions: Sequence[str], audio: bool = False, skip: dict[int, str] | None = None) -> Path:
    """A tar of len(captions) samples `s000`.. with a PNG (colour by index), a caption and optionally a WAV;
    `skip` = {index: ext} leaves that member out."""
    skip = skip or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, caption in enumerate(captions):
            members = {"png": png(COLOURS[i % len(COLOURS)]), "txt": caption.encode()}
            if audio:
                members["wav"] = wav(200.0 + 50 * i)
            for ext, data in members.items():
                if skip.get(i) != ext:
                    add(tar, f"s{i:03d}.{ext}", data)
    return path


def member_offsets(path: Path) -> dict[str, int]:
    """Header offset of every member of a tar."""
    with tarfile.open(path) as tar:
        return {m.name: m.offset for m in tar.getmembers()}


def truncate(path: Path, keep: float) -> None:
    """Cut a file to `keep` bytes (an int) or to that fraction of its size (a float)."""
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])


def flip_byte(path: Path, offset: int = -100) -> None:
    """Change one byte (same size, different content)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


class FaultTower(Tower):
    """A cheap deterministic tower: image -> mean colour and its square; text -> letter counts; `scale` stands for
    different weights (it is a buffer, so the weights hash sees it)."""

    def __init__(self, modality: str, scale: float = 1.0):
        super().__init__()
        self.modality, self.name = modality, f"fault-{modality}"
        self.dim = 6 if modality == "image" else 8
        self.register_buffer("scale", torch.tensor(float(scale)))

    def prepare(self, values: Sequence[Any]) -> torch.Tensor:
        if self.modality == "image":
            arrays = [np.asarray(v.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0) / 255 for v in values]
            x = torch.tensor(np.stack(arrays))
            return torch.cat([x, x ** 2], dim=1)
        rows = [[sum(c == ch for c in str(v)) for ch in "aeiourst"] for v in values]
        return torch.tensor(rows, dtype=torch.float32)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs * self.scale


for _modality in ("image", "text"):
    if f"fault-{_modality}" not in tower_names():
        register_tower(f"fault-{_modality}")(lambda m=_modality, **kw: FaultTower(m, **kw))


class Net(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


def batches(start: int):
    step = start
    while True:
        g = torch.Generator().manual_seed(step)
        x = torch.randn(8, 4, generator=g)
        yield x, x.sum(1)
        step += 1


def step_fn(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    x, y = batch
    return (model(x) - y).pow(2).mean(), {}


def config(**kw: Any) -> TrainConfig:
    return TrainConfig(**{"steps": 12, "lr": 1e-2, "warmup": 2, "ckpt_every": 4, "log_every": 1, "eval_every": 100,
                          "keep_checkpoints": 3, **kw})


def losses(history: list[dict]) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in history]
