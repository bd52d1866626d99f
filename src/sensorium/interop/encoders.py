"""Towers backed by local checkpoint directories: `build_tower("hf-clip", path=..., modality="image")`
(or `"hf-clip-image:PATH"`, `"hf-clip-text:PATH"` in name-only configs) uses one side of a HF CLIP /
SigLIP or open_clip dual encoder, `"hf-whisper:PATH"` a Whisper encoder (mean over frames). Each brings
the checkpoint's own preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from sensorium.core.files import CheckpointError
from sensorium.encoders.base import Tower, register_tower
from sensorium.interop.pretrained import Pretrained, load_pretrained
from sensorium.modalities.audio import resample
from sensorium.models.dual_encoder import DualEncoder
from sensorium.models.whisper import WhisperEncoder


class DualEncoderTower(Tower):
    """The image or text side of a dual encoder, giving its projected (contrastive-space) embedding."""

    def __init__(self, pretrained: Pretrained, modality: str):
        super().__init__()
        if not isinstance(pretrained.model, DualEncoder):
            raise CheckpointError(f"{pretrained.source}: a {pretrained.family} checkpoint is not a dual encoder")
        if modality not in ("image", "text"):
            raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
        self.pretrained, self.modality = pretrained, modality
        self.name = f"hf-clip:{pretrained.family}"
        model: DualEncoder = pretrained.model
        self.encoder = model.vision if modality == "image" else model.text
        self.dim = self.encoder.out_dim
        if (pretrained.image if modality == "image" else pretrained.text) is None:
            raise CheckpointError(f"{pretrained.source}: no {modality} preprocessing files "
                                  f"({'preprocessor_config.json' if modality == 'image' else 'tokenizer.json'})")

    def prepare(self, values: Sequence[Any]) -> Any:
        """PIL images -> pixels, or strings -> {'ids', 'padding'}."""
        if self.modality == "image":
            return self.pretrained.image(values)
        ids, padding = self.pretrained.text(values)
        return {"ids": ids, "padding": padding}

    def forward(self, inputs: Any) -> torch.Tensor:
        """Projected embeddings [B, dim] (not normalized)."""
        return self.encoder(inputs) if self.modality == "image" else self.encoder(inputs["ids"], inputs["padding"])

    def describe(self) -> dict[str, Any]:
        """Name, modality, dim and the checkpoint it came from."""
        return {**super().describe(), "path": self.pretrained.source, "family": self.pretrained.family}


class WhisperTower(Tower):
    """Whisper encoder: waveforms -> log-mel -> mean of the encoder's hidden states."""

    modality = "audio"

    def __init__(self, pretrained: Pretrained):
        super().__init__()
        if not isinstance(pretrained.model, WhisperEncoder) or pretrained.audio is None:
            raise CheckpointError(f"{pretrained.source}: needs a Whisper checkpoint with preprocessor_config.json")
        self.pretrained, self.encoder = pretrained, pretrained.model
        self.name, self.dim = "hf-whisper", pretrained.model.cfg.transformer.dim

    def prepare(self, values: Sequence[Any]) -> torch.Tensor:
        """Waveforms (objects with .samples/.sample_rate, or arrays at the model's rate) -> log-mel."""
        rate = self.pretrained.audio.sampling_rate
        waves = [resample(np.asarray(v.samples), v.sample_rate, rate) if hasattr(v, "samples") else np.asarray(v)
                 for v in values]
        return self.pretrained.audio(waves)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """[B, dim] mean-pooled encoder states."""
        return self.encoder.pooled(inputs)


@register_tower("hf-clip")
def hf_clip_tower(path: str | Path, modality: str = "image", allow_pickle: bool = False) -> Tower:
    """One side of a CLIP / SigLIP / open_clip checkpoint directory."""
    return DualEncoderTower(load_pretrained(path, allow_pickle), modality)


@register_tower("hf-clip-image")
def hf_clip_image_tower(path: str | Path, allow_pickle: bool = False) -> Tower:
    """The image side of a CLIP / SigLIP / open_clip checkpoint (`hf-clip-image:PATH` in configs)."""
    return hf_clip_tower(path, "image", allow_pickle)


@register_tower("hf-clip-text")
def hf_clip_text_tower(path: str | Path, allow_pickle: bool = False) -> Tower:
    """The text side of a CLIP / SigLIP / open_clip checkpoint (`hf-clip-text:PATH` in configs)."""
    return hf_clip_tower(path, "text", allow_pickle)


@register_tower("hf-whisper")
def hf_whisper_tower(path: str | Path, allow_pickle: bool = False) -> Tower:
    """The encoder of a Whisper checkpoint directory."""
    return WhisperTower(load_pretrained(path, allow_pickle))
