"""Speech towers. `logmel-stats`: a fixed log-mel statistics vector (a training-free baseline).
`speech-minilm`: a small conv + transformer encoder over log-mels that Sensorium trains itself by distilling
the MiniLM text tower on espeak-ng speech (see speech_training.py), so spoken words land near their text in
MiniLM's 384-d space. Its weights ship in towers/weights/ with a JSON card describing their training."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from sensorium.core.files import read_safetensors
from sensorium.encoders.base import Tower, register_tower
from sensorium.modalities.audio import SAMPLE_RATE, Waveform
from sensorium.nn.logmel import LogMel, MelConfig, mel_filterbank  # noqa: F401 (part of the speech tower's interface)

WEIGHTS_DIR = Path(__file__).parent / "weights"


def pad_waves(values: Sequence[Waveform], max_seconds: float = 30.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad mono 16 kHz waveforms into [B, T] with their lengths (clipped to max_seconds)."""
    limit = int(max_seconds * SAMPLE_RATE)
    arrays = []
    for value in values:
        if value.sample_rate != SAMPLE_RATE:
            raise ValueError(f"expected {SAMPLE_RATE} Hz audio, got {value.sample_rate} Hz (decode via sensorium.modalities)")
        arrays.append(torch.as_tensor(value.samples[:limit], dtype=torch.float32))
    lengths = torch.tensor([max(len(a), 1) for a in arrays])
    out = torch.zeros(len(arrays), int(lengths.max()))
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out, lengths


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size] True where a position is inside the sequence."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


@dataclass
class SpeechEncoderConfig:
    """Shape of the speech encoder (conv subsampling by `2**subsample_layers`, then a transformer)."""

    n_mels: int = 80
    width: int = 192
    depth: int = 4
    heads: int = 3
    subsample_layers: int = 3
    max_frames: int = 512
    out_dim: int = 384
    dropout: float = 0.1


class SpeechEncoder(nn.Module):
    """Log-mel [B, F, n_mels] -> one embedding per utterance. Padding-invariant: padded frames are zeroed after
    every convolution and masked in attention and pooling, so batching never changes an item's output."""

    def __init__(self, config: SpeechEncoderConfig):
        super().__init__()
        self.config = config
        chans = [config.n_mels] + [config.width] * config.subsample_layers
        self.convs = nn.ModuleList(nn.Conv1d(chans[i], chans[i + 1], 3, stride=2, padding=1)
                                   for i in range(config.subsample_layers))
        self.pos = nn.Parameter(torch.randn(config.max_frames, config.width) * 0.02)
        layer = nn.TransformerEncoderLayer(config.width, config.heads, 4 * config.width, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.width)
        self.pool = nn.Linear(config.width, 1)
        self.proj = nn.Linear(config.width, config.out_dim)

    def frame_states(self, mel: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel [B, F, n_mels] -> normed per-frame states [B, F', width] (F' = F subsampled) and their mask."""
        # per-utterance mean normalisation over valid frames (robust to voice and level)
        mask = length_mask(frames, mel.shape[1])[..., None]
        mean = (mel * mask).sum(1, keepdim=True) / frames[:, None, None].clamp(min=1)
        x = ((mel - mean) * mask / 4.0).transpose(1, 2)
        lengths = frames
        for conv in self.convs:
            x = F.gelu(conv(x))
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
            x = x * length_mask(lengths, x.shape[2])[:, None, :]
        x = x.transpose(1, 2)[:, : self.config.max_frames]
        lengths = lengths.clamp(min=1, max=x.shape[1])
        valid = length_mask(lengths, x.shape[1])
        x = self.transformer(x + self.pos[: x.shape[1]], src_key_padding_mask=~valid)
        return self.norm(x), valid

    def forward(self, mel: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, F, n_mels] and frame counts [B] -> one embedding per utterance [B, out_dim]."""
        x, valid = self.frame_states(mel, frames)
        scores = self.pool(x).squeeze(-1).masked_fill(~valid, float("-inf"))
        pooled = (scores.softmax(dim=1)[..., None] * x).sum(1)
        return self.proj(pooled)


class SpeechTower(Tower):
    """The packaged speech encoder: waveforms -> 384-d vectors in MiniLM's text space."""

    name = "speech-minilm"
    modality = "audio"

    def __init__(self, weights: str | Path | None = None, encoder: SpeechEncoder | None = None,
                 mel: MelConfig = MelConfig()):
        super().__init__()
        self.card: dict[str, Any] = {}
        if encoder is None:
            path = Path(weights) if weights else WEIGHTS_DIR / "speech-minilm.safetensors"
            encoder, self.card = load_speech_encoder(path)
        self.encoder = encoder
        self.frontend = LogMel(mel)
        self.dim = encoder.config.out_dim

    def prepare(self, values: Sequence[Waveform]) -> dict[str, torch.Tensor]:
        waves, lengths = pad_waves(values)
        return {"waves": waves, "lengths": lengths}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        mel, frames = self.frontend(inputs["waves"], inputs["lengths"])
        return F.normalize(self.encoder(mel, frames), dim=-1)

    @property
    def token_dim(self) -> int:
        """Width of the per-frame states (the encoder's transformer width)."""
        return self.encoder.config.width

    def tokens(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms -> per-frame states [B, F', width] (80 ms hops after subsampling) and their mask."""
        mel, frames = self.frontend(inputs["waves"], inputs["lengths"])
        return self.encoder.frame_states(mel, frames)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "weights_sha1": self.card.get("weights_sha1"), "trained": self.card.get("trained_on")}


def load_speech_encoder(path: str | Path) -> tuple[SpeechEncoder, dict[str, Any]]:
    """Weights (safetensors) + card (same name, .json) -> SpeechEncoder and the card."""
    path = Path(path)
    card_path = path.with_suffix(".json")
    if not path.exists() or not card_path.exists():
        raise FileNotFoundError(f"{path}: speech tower weights or card missing; train them with "
                                "`sensorium towers train-speech` or use the `logmel-stats` tower")
    card = json.loads(card_path.read_text())
    encoder = SpeechEncoder(SpeechEncoderConfig(**card["encoder"]))
    state = {k: v.float() for k, v in read_safetensors(path).items()}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: missing keys {missing}, unexpected keys {unexpected}")
    return encoder, card


def save_speech_encoder(encoder: SpeechEncoder, path: str | Path, card: dict[str, Any]) -> None:
    """fp16 safetensors + JSON card (config, training data, metrics)."""
    import hashlib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().half().contiguous().cpu() for k, v in encoder.state_dict().items()}, str(path))
    card = {**card, "encoder": asdict(encoder.config),
            "weights_sha1": hashlib.sha1(path.read_bytes()).hexdigest()}
    path.with_suffix(".json").write_text(json.dumps(card, indent=2))


class LogMelStatsTower(Tower):
    """Mean and standard deviation of each log-mel band and its delta over time (320-d); no training."""

    name = "logmel-stats"
    modality = "audio"
    dim = 320

    def __init__(self):
        super().__init__()
        self.frontend = LogMel()

    def prepare(self, values: Sequence[Waveform]) -> dict[str, torch.Tensor]:
        waves, lengths = pad_waves(values)
        return {"waves": waves, "lengths": lengths}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        mel, frames = self.frontend(inputs["waves"], inputs["lengths"])
        delta = F.pad(mel[:, 1:] - mel[:, :-1], (0, 0, 0, 1))
        feats = []
        for x in (mel, delta):
            mask = length_mask(frames, x.shape[1])[..., None].float()
            n = mask.sum(1).clamp(min=1)
            mean = (x * mask).sum(1) / n
            std = (((x - mean[:, None]) ** 2 * mask).sum(1) / n).sqrt()
            feats += [mean, std]
        return torch.cat(feats, dim=1)


register_tower("speech-minilm")(SpeechTower)
register_tower("logmel-stats")(LogMelStatsTower)
