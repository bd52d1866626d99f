"""Helpers for parity tests: tiny tokenizer vocabularies, random images and audio, weight perturbation
(so that every LayerNorm/bias is non-trivial) and max-abs-diff reporting."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sensorium.interop.preprocess import bytes_to_unicode

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


TINY_ENCODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def make_hf_clip(root):
    """A tiny random-weight HF CLIP directory (model, CLIP BPE tokenizer, PIL image processor)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vocab, merges = clip_vocab()
    torch.manual_seed(0)
    eos, bos = vocab["<|endoftext|>"], vocab["<|startoftext|>"]
    cfg = CLIPConfig(text_config=dict(**TINY_ENCODER, vocab_size=len(vocab), max_position_embeddings=16,
                                      hidden_act="quick_gelu", eos_token_id=eos, bos_token_id=bos, pad_token_id=eos),
                     vision_config=dict(**TINY_ENCODER, image_size=32, patch_size=8, hidden_act="quick_gelu"),
                     projection_dim=16)
    perturb(CLIPModel(cfg)).save_pretrained(root)
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16).save_pretrained(root)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root)
    return root
