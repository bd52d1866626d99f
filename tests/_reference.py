"""Helpers for parity tests: tiny tokenizer vocabularies, random images and audio, weight perturbation
(so that every LayerNorm/bias is non-trivial) and max-abs-diff reporting."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sensorium.towers.preprocess import bytes_to_unicode

TEXTS = ["a photo of a cat", "A DOG, running!", "the the the cat sat on the mat with a dog and another cat"]
PARITY: dict[str, float] = {}  # name -> max abs diff, printed at the end of the session


def clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A ~530-token CLIP-style byte-level BPE vocab with a few merges."""
    chars = list(bytes_to_unicode().values())
    merges = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>"), ("o", "f</w>"), ("d", "o"), ("do", "g</w>")]
    words = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    words += ["<|startoftext|>", "<|endoftext|>"]
    return {w: i for i, w in enumerate(words)}, merges


def random_images(n: int = 3, seed: int = 0) -> list[Image.Image]:
    """Random RGB images of differing, non-square sizes."""
    rng = np.random.RandomState(seed)
    sizes = [(40, 52), (64, 37), (33, 33), (90, 45)]
    return [Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:n]]


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add noise to every parameter so norms and biases are not at their identity init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def max_diff(name: str, a: torch.Tensor, b: torch.Tensor) -> float:
    """Record and return max |a - b| (float32)."""
    diff = (a.detach().float() - b.detach().float()).abs().max().item()
    PARITY[name] = max(diff, PARITY.get(name, 0.0))
    return diff
