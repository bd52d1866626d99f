"""Fixtures shared by the harness tests: VLMEvalKit-style TSV files with solid-colour pictures, a scripted chat
model, and a toy embedding model whose space is 'which World colour' (pictures by their mean colour, text by the
colour word it names), so similarity answers colour questions exactly."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sensorium.data.world import COLORS
from sensorium.eval.bench.formats import write_rows
from sensorium.inference import Embedder

NAMES = list(COLORS)


def png_b64(color: tuple[int, int, int] | str, size: int = 16) -> str:
    """Base64 PNG of a solid picture (a World colour name or an RGB triple)."""
    rgb = COLORS[color] if isinstance(color, str) else color
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def colour_rows(golds: list[str], letters: str = "ABCD") -> list[dict[str, Any]]:
    """MCQ rows 'What colour is the picture?' with options in a fixed colour order; gold = the picture's colour."""
    rows = []
    for i, gold in enumerate(golds):
        opts = [gold] + [c for c in NAMES if c != gold][: len(letters) - 1]
        opts = opts[i % len(opts):] + opts[: i % len(opts)]  # the answer letter moves around
        rows.append({"index": i, "image": png_b64(gold), "question": "What colour is the picture?", "hint": "",
                     **dict(zip(letters, opts)), "answer": letters[opts.index(gold)],
                     "category": "warm" if gold in ("red", "orange", "yellow", "pink") else "cool",
                     "l2-category": "colour", "split": "dev"})
    return rows


def write_tsv(path: Path, rows: list[dict[str, Any]]) -> Path:
    return write_rows(path, rows)


@dataclass
class Said:
    text: str


class ScriptedChat:
    """A chat model answering from a function of the prompt text; counts its calls."""

    name = "scripted"
    modalities = ["image"]

    def __init__(self, answer):
        self.answer, self.calls = answer, 0

    def chat(self, messages, **options):
        self.calls += 1
        text = messages[-1]["content"][-1]["text"]
        return Said(self.answer(text, messages))


class ColourEmbedder(Embedder):
    """image -> one-hot of the nearest World colour to its mean pixel; text -> one-hot of the colour word it names
    (uniform when none)."""

    def __init__(self):
        super().__init__("colours")

    @property
    def modalities(self) -> list[str]:
        return ["image", "text"]

    @property
    def dim(self) -> int:
        return len(NAMES)

    def _embed_values(self, modality: str, values: list[Any]) -> torch.Tensor:
        out = torch.full((len(values), len(NAMES)), 0.01)
        table = np.asarray([COLORS[c] for c in NAMES], dtype=np.float32)
        for i, v in enumerate(values):
            if modality == "image":
                mean = np.asarray(v, dtype=np.float32).reshape(-1, 3).mean(0)
                out[i, int(np.argmin(((table - mean) ** 2).sum(1)))] = 1.0
            else:
                hits = [k for k, c in enumerate(NAMES) if c in re.findall(r"[a-z]+", v.lower())]
                if hits:
                    out[i, hits[-1]] = 1.0
        return out
