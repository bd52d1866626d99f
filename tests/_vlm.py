"""Tiny language-decoder fixtures shared by the VLM tests: a BPE tokenizer trained on a few sentences and a
model reading 16 px images as 4 raw 8 px patches (and optionally audio)."""

from __future__ import annotations

import torch
from PIL import Image

from sensorium.models.llama import LlamaConfig
from sensorium.models.template import ChatTemplate, ChatTokenizer, train_tokenizer
from sensorium.models.vlm import MediaConfig, VisionLanguageModel, VLMConfig
from sensorium.nn.projector import ProjectorConfig

TEXTS = ["What shape is the red object?", "circle", "square", "How many circles are there?", "2", "3",
         "Describe the picture.", "A small red circle on the left and a blue square."] * 20


def tokenizer(template: ChatTemplate | None = None, modalities=("image", "audio")) -> ChatTokenizer:
    """A byte-level BPE tokenizer for TEXTS with the template's markers and modality placeholders."""
    template = template or ChatTemplate()
    return ChatTokenizer(train_tokenizer(TEXTS, 320, template, list(modalities)), template)


def model(projector: str = "mlp", max_positions: int = 128, seed: int = 0, **media: MediaConfig) -> VisionLanguageModel:
    """A 2-layer decoder over 16 px images (4 patch tokens) with the given projector kind."""
    tok = tokenizer()
    torch.manual_seed(seed)
    media = media or {"image": MediaConfig("image-patches", {"size": 16, "patch": 8},
                                           ProjectorConfig(kind=projector, positions=4, queries=3, heads=2))}
    cfg = VLMConfig(media=media, decoder=LlamaConfig(vocab_size=tok.vocab_size, dim=32, depth=2, n_heads=4,
                                                     n_kv_heads=2, mlp_hidden=64, max_positions=max_positions,
                                                     tie_embeddings=True, eos_token_ids=list(tok.stop_ids),
                                                     pad_token_id=tok.pad_id))
    return VisionLanguageModel(cfg, tok).eval()


def image(color: tuple[int, int, int] = (200, 30, 30), size: int = 16) -> Image.Image:
    """A solid-colour RGB image."""
    return Image.new("RGB", (size, size), color)
