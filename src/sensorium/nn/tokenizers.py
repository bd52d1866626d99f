"""Per-modality tokenizers (Meta-Transformer's "data-to-sequence" stage): nn.Modules that turn a batch value of
one modality into tokens `Tokens(x [B, T, dim], mask [B, T])` for a shared trunk, each with learned positions.

A modality names its tokenizer kind in the registry (`Modality.tokenizer`, default options in
`metadata["tokenizer_options"]`); `build_tokenizer(modality, dim, options)` looks both up, so a model never
branches on modality names. Kinds: `bpe` (text, byte-level BPE from the `tokenizers` library), `patches`
(images, depth: ViT patches), `mel_patches` (audio: log-mel spectrogram patches), `tubelets` (video: ViViT
tubelets), `series_patches` (time series: PatchTST patches), `features` (tabular rows: FT-Transformer tokens)."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn

from sensorium import modalities
from sensorium.core.files import CheckpointError
from sensorium.nn.logmel import LogMel, MelConfig


def read_tokenizer(path: str | Path) -> Tokenizer:
    """A `tokenizers` tokenizer.json; a missing, truncated or corrupt file is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer file not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the library raises a bare Exception for a bad file
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: not a readable tokenizer.json ({reason}); restore or re-create it") from None


@dataclass
class Tokens:
    """Token embeddings x [B, T, dim] and which of them are real (mask [B, T], True = real, False = padding)."""

    x: torch.Tensor
    mask: torch.Tensor


def _valid(lengths: torch.Tensor | None, batch: int, steps: int, device: torch.device) -> torch.Tensor:
    """[B, steps] mask of real positions from per-sample lengths (all real when lengths is None)."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    return torch.arange(steps, device=device)[None, :] < lengths.to(device)[:, None]


class _Positions(nn.Module):
    """A learned absolute position table added to the first T tokens."""

    def __init__(self, max_tokens: int, dim: int):
        super().__init__()
        self.max_tokens = max_tokens
        self.table = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)

    def forward(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """x [B, T, dim] + positions 0..T-1; a clear error when T exceeds the table."""
        if x.shape[1] > self.max_tokens:
            raise ValueError(f"{what} gives {x.shape[1]} tokens but the tokenizer has positions for {self.max_tokens}; "
                             "raise its max_tokens option (or shorten the input)")
        return x + self.table[: x.shape[1]]


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] pixels -> float in [-1, 1]."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x * 2.0 - 1.0


class PatchTokenizer(nn.Module):
    """Images [B, C, H, W] (uint8 or float in [0, 1]; [B, H, W] for one channel) -> non-overlapping patches."""

    def __init__(self, dim: int, patch: int = 16, channels: int = 3, max_tokens: int = 1024):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)
        self.pos = _Positions(max_tokens, dim)

    def forward(self, values: torch.Tensor, lengths: torch.Tensor | None = None) -> Tokens:
        """One token per patch, row-major."""
        x = values[:, None] if values.dim() == 3 else values
        x = self.proj(_pixels(x)).flatten(2).transpose(1, 2)
        return Tokens(self.pos(x, "image"), _valid(None, x.shape[0], x.shape[1], x.device))


class TubeletTokenizer(nn.Module):
    """Video [B, T, C, H, W] uint8 (+ frame lengths) -> tubelets of `frames` x `patch` x `patch` pixels."""

    def __init__(self, dim: int, patch: int = 16, frames: int = 2, channels: int = 3, max_tokens: int = 2048):
        super().__init__()
        self.frames = frames
        self.proj = nn.Conv3d(channels, dim, (frames, patch, patch), stride=(frames, patch, patch))
        self.pos = _Positions(max_tokens, dim)

    def forward(self, values: torch.Tensor, lengths: torch.Tensor | None = None) -> Tokens:
        """Tokens ordered time-major; tubelets made only of padded frames are masked out."""
        x = _pixels(values).transpose(1, 2)  # [B, C, T, H, W]
        pad = -x.shape[2] % self.frames
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        x = self.proj(x)  # [B, dim, T', H', W']
        steps, per_step = x.shape[2], x.shape[3] * x.shape[4]
        x = x.flatten(2).transpose(1, 2)
        real = None if lengths is None else torch.div(lengths + self.frames - 1, self.frames, rounding_mode="floor")
        mask = _valid(real, x.shape[0], steps, x.device).repeat_interleave(per_step, dim=1)
        return Tokens(self.pos(x, "video"), mask)


class MelPatchTokenizer(nn.Module):
    """Waveforms [B, N] (16 kHz, + sample lengths) -> log-mel spectrogram -> patches of `patch_frames` frames x
    `patch_mels` bands (0 = all bands, i.e. one token per time slice), as AST/ONE-PEACE audio adapters do."""

    def __init__(self, dim: int, patch_frames: int = 8, patch_mels: int = 0, n_mels: int = 80, max_tokens: int = 1024):
        super().__init__()
        self.mel = LogMel(MelConfig(n_mels=n_mels))
        self.patch_frames, self.patch_mels = patch_frames, patch_mels or n_mels
        if n_mels % self.patch_mels:
            raise ValueError(f"patch_mels={patch_mels} must divide n_mels={n_mels}")
        self.proj = nn.Conv2d(1, dim, (patch_frames, self.patch_mels), stride=(patch_frames, self.patch_mels))
        self.pos = _Positions(max_tokens, dim)

    def prepare(self, values: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameter-free front end: waveforms [B, N] -> normalised log-mel [B, frames, n_mels] (zero past each
        length) and frame counts. A dataset held in memory can apply it once per sample (`MemorySet.map`) and feed
        the features to `forward`, which skips it for [B, frames, n_mels] input."""
        if lengths is None:
            lengths = torch.full((values.shape[0],), values.shape[1], device=values.device)
        # zero everything past each length and add half a window of zeros, so STFT frames at the end see the same
        # samples whether the waveform is alone or padded inside a batch (stft's reflect padding would differ)
        waves = values.float() * _valid(lengths, values.shape[0], values.shape[1], values.device)
        mel, frames = self.mel(F.pad(waves, (0, self.mel.config.n_fft // 2)), lengths)
        mel = (mel + 4.0) / 4.0  # log power of speech sits around -8..0: roughly centre and scale it
        return mel * _valid(frames, mel.shape[0], mel.shape[1], mel.device)[..., None], frames

    def forward(self, values: torch.Tensor, lengths: torch.Tensor | None = None) -> Tokens:
        """Waveforms [B, N] (or prepared log-mels [B, frames, n_mels] with frame lengths) -> tokens ordered
        time-major, then band; patches of padding frames are masked out."""
        if values.dim() == 3:
            mel = values.float()
            frames = lengths if lengths is not None else torch.full((mel.shape[0],), mel.shape[1])
            frames = frames.to(mel.device)
            mel = mel * _valid(frames, mel.shape[0], mel.shape[1], mel.device)[..., None]
        else:
            mel, frames = self.prepare(values, lengths)
        mel = F.pad(mel, (0, 0, 0, -mel.shape[1] % self.patch_frames))
        x = self.proj(mel[:, None])  # [B, dim, T', bands']
        steps, bands = x.shape[2], x.shape[3]
        x = x.flatten(2).transpose(1, 2)
        real = torch.div(frames + self.patch_frames - 1, self.patch_frames, rounding_mode="floor")
        mask = _valid(real, x.shape[0], steps, x.device).repeat_interleave(bands, dim=1)
        return Tokens(self.pos(x, "audio"), mask)


class SeriesPatchTokenizer(nn.Module):
    """Time series [B, T, C] (+ step lengths) -> patches of `patch` steps x all channels (PatchTST), each series
    standardised over its real steps first (`normalize`, RevIN-style) so scale does not dominate."""

    def __init__(self, dim: int, patch: int = 8, channels: int = 1, normalize: bool = True, max_tokens: int = 512):
        super().__init__()
        self.patch, self.channels, self.normalize = patch, channels, normalize
        self.proj = nn.Linear(patch * channels, dim)
        self.pos = _Positions(max_tokens, dim)

    def forward(self, values: torch.Tensor, lengths: torch.Tensor | None = None) -> Tokens:
        """One token per patch; patches of padding steps are masked out."""
        x = values.float()
        if x.shape[-1] != self.channels:
            raise ValueError(f"time series has {x.shape[-1]} channels but the tokenizer expects {self.channels}")
        valid = _valid(lengths, x.shape[0], x.shape[1], x.device)[..., None]
        if self.normalize:
            count = valid.sum(1, keepdim=True).clamp(min=1)
            mean = (x * valid).sum(1, keepdim=True) / count
            std = (((x - mean) * valid).pow(2).sum(1, keepdim=True) / count).sqrt().clamp(min=1e-5)
            x = (x - mean) / std
        x = F.pad(x * valid, (0, 0, 0, -x.shape[1] % self.patch))
        x = self.proj(x.reshape(x.shape[0], -1, self.patch * self.channels))
        real = None if lengths is None else torch.div(lengths + self.patch - 1, self.patch, rounding_mode="floor")
        return Tokens(self.pos(x, "time series"), _valid(real, x.shape[0], x.shape[1], x.device))


class FeatureTokenizer(nn.Module):
    """Tabular rows (list of `{column: value}` dicts) -> one token per configured column (FT-Transformer):
    column embedding + value, where numbers (and booleans) scale a learned per-column vector, strings pick a
    hashed bucket embedding, and a missing value (or a missing row) is a learned per-column token."""

    def __init__(self, dim: int, columns: Sequence[str] = (), buckets: int = 1024):
        super().__init__()
        if not columns:
            raise ValueError("the tabular tokenizer needs its columns (option `columns: [...]`)")
        self.columns, self.buckets = list(columns), buckets
        n = len(self.columns)
        self.column = nn.Parameter(torch.randn(n, dim) * 0.02)
        self.numeric = nn.Parameter(torch.randn(n, dim) * 0.02)
        self.missing = nn.Parameter(torch.randn(n, dim) * 0.02)
        self.category = nn.Embedding(buckets, dim)

    def _bucket(self, column: str, value: Any) -> int:
        return zlib.crc32(f"{column}={value}".encode()) % self.buckets

    def forward(self, values: Sequence[dict[str, Any] | None], lengths: torch.Tensor | None = None) -> Tokens:
        """[B rows] -> [B, n_columns, dim]."""
        n, device = len(self.columns), self.column.device
        kind = torch.zeros(len(values), n, dtype=torch.long)  # 0 missing, 1 number, 2 category
        number = torch.zeros(len(values), n)
        bucket = torch.zeros(len(values), n, dtype=torch.long)
        for i, row in enumerate(values):
            for j, column in enumerate(self.columns):
                value = None if row is None else row.get(column)
                if isinstance(value, (bool, int, float)) and not (isinstance(value, float) and math.isnan(value)):
                    kind[i, j], number[i, j] = 1, float(value)
                elif value is not None:
                    kind[i, j], bucket[i, j] = 2, self._bucket(column, value)
        kind, number, bucket = kind.to(device), number.to(device), bucket.to(device)
        x = torch.where((kind == 1)[..., None], number[..., None] * self.numeric, self.missing)
        x = torch.where((kind == 2)[..., None], self.category(bucket), x) + self.column
        return Tokens(x, torch.ones(len(values), n, dtype=torch.bool, device=device))


SPECIALS = ("[PAD]", "[UNK]", "[MISSING]")


def train_bpe(texts: Sequence[str], vocab_size: int = 2000, min_frequency: int = 2) -> str:
    """Train a byte-level BPE tokenizer on `texts`; returns its tokenizer.json text ([PAD] is id 0)."""

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([t.lower() for t in texts], trainer)
    return tok.to_str()


class TextTokenizer(nn.Module):
    """Strings -> BPE ids (the `tokenizers` library) -> embeddings + positions. `vocab` is a tokenizer.json path
    or its JSON text. Text is lower-cased; ids beyond `max_length` are cut. Already-encoded LongTensor ids
    [B, L] (0 = padding) are accepted too. The vocabulary travels in the module's state and in
    `export_options()`, so checkpoints and saved models do not depend on the file."""

    def __init__(self, dim: int, vocab: str = "", max_length: int = 64, lowercase: bool = True):
        super().__init__()

        if not vocab:
            raise ValueError("the text tokenizer needs `vocab`: a tokenizer.json path (train one with train_bpe)")
        if not vocab.lstrip().startswith("{"):
            if not Path(vocab).exists():
                raise FileNotFoundError(f"{vocab}: tokenizer.json not found")
            vocab = Path(vocab).read_text()
        self.max_length, self.lowercase = max_length, lowercase
        self.tokenizer = Tokenizer.from_str(vocab)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.embed = nn.Embedding(self.tokenizer.get_vocab_size(), dim)
        self.pos = _Positions(max_length, dim)

    def export_options(self) -> dict[str, Any]:
        """Options that rebuild this tokenizer without the original file."""
        return {"vocab": self.tokenizer.to_str()}

    def encode(self, texts: Sequence[str | None]) -> torch.Tensor:
        """Strings (None = missing: one [MISSING] token) -> LongTensor ids [B, L] padded with [PAD]."""
        missing = self.tokenizer.token_to_id("[MISSING]")
        prepared = [(t.lower() if self.lowercase else t) if t is not None else "" for t in texts]
        encoded = self.tokenizer.encode_batch(prepared)
        ids = [e.ids[: self.max_length] or [missing] for e in encoded]
        out = torch.full((len(ids), max(1, max(len(i) for i in ids))), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(ids):
            out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return out

    def forward(self, values: Sequence[str | None] | torch.Tensor, lengths: torch.Tensor | None = None) -> Tokens:
        """Token embeddings of the text, padding masked."""
        ids = values if isinstance(values, torch.Tensor) else self.encode(values)
        ids = ids.to(self.embed.weight.device)
        return Tokens(self.pos(self.embed(ids), "text"), ids != self.pad_id)

    def get_extra_state(self) -> str:
        """The tokenizer.json text, saved in state dicts next to the embedding it indexes."""
        return self.tokenizer.to_str()

    def set_extra_state(self, state: str) -> None:
        """Restore the tokenizer a checkpoint was trained with."""

        if state:
            self.tokenizer = Tokenizer.from_str(state)


# tokenizer kind (named by `Modality.tokenizer`) -> class(dim, **options)
TOKENIZERS: dict[str, Callable[..., nn.Module]] = {
    "bpe": TextTokenizer, "patches": PatchTokenizer, "mel_patches": MelPatchTokenizer,
    "tubelets": TubeletTokenizer, "series_patches": SeriesPatchTokenizer, "features": FeatureTokenizer,
}


def build_tokenizer(modality: str, dim: int, options: dict[str, Any] | None = None) -> nn.Module:
    """The tokenizer registered for `modality` (or `options["kind"]`), with the modality's default options
    updated by `options`; a clear error when the modality has none."""
    spec = modalities.get(modality)
    options = dict(options or {})
    kind = options.pop("kind", None) or spec.tokenizer
    if kind is None:
        raise ValueError(f"modality {modality!r} has no tokenizer; register one (Modality.tokenizer) or set "
                         f"`kind` in its tokenizer options (known kinds: {', '.join(TOKENIZERS)})")
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer kind {kind!r} for {modality!r}; known: {', '.join(TOKENIZERS)}")
    return TOKENIZERS[kind](dim, **{**spec.metadata.get("tokenizer_options", {}), **options})
