"""Preprocessing read from checkpoint directories, reimplemented without `transformers`: image
resize/crop/normalize (HF image-processor and open_clip conventions), tokenizers (tokenizer.json or CLIP
BPE vocab + merges, special tokens, padding) and Whisper's log-mel spectrogram."""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from sensorium.core.files import CheckpointError, read_json
from sensorium.nn.logmel import mel_filters
from sensorium.nn.tokenizers import read_tokenizer

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ImageProcessor:
    """Resize (shortest edge, or exact height/width), center crop, scale to [0, 1], normalize."""

    size: int | tuple[int, int] = 224  # int: shortest edge; (h, w): exact size
    crop: tuple[int, int] | None = (224, 224)
    resample: int = Image.BICUBIC
    mean: Sequence[float] = OPENAI_MEAN
    std: Sequence[float] = OPENAI_STD
    rescale: float = 1 / 255
    crop_round: bool = False  # torchvision rounds the crop offset; HF floors it

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "ImageProcessor":
        """From a `preprocessor_config.json` (CLIPImageProcessor / SiglipImageProcessor fields)."""
        size = cfg.get("size", 224)
        if isinstance(size, dict):
            size = size["shortest_edge"] if "shortest_edge" in size else (size["height"], size["width"])
        crop = cfg.get("crop_size") if cfg.get("do_center_crop", False) else None
        if isinstance(crop, dict):
            crop = (crop["height"], crop["width"])
        elif isinstance(crop, int):
            crop = (crop, crop)
        return cls(size=size if cfg.get("do_resize", True) else 0, crop=crop,
                   resample=int(cfg.get("resample", Image.BICUBIC)),
                   mean=tuple(cfg.get("image_mean", OPENAI_MEAN)) if cfg.get("do_normalize", True) else (0, 0, 0),
                   std=tuple(cfg.get("image_std", OPENAI_STD)) if cfg.get("do_normalize", True) else (1, 1, 1),
                   rescale=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0)

    def to_hf(self, kind: str = "CLIPImageProcessor") -> dict[str, Any]:
        """Fields of a `preprocessor_config.json` that reproduces this preprocessing."""
        size = {"shortest_edge": self.size} if isinstance(self.size, int) else \
            {"height": self.size[0], "width": self.size[1]}
        out = {"image_processor_type": kind, "do_resize": True, "size": size, "resample": self.resample,
               "do_center_crop": self.crop is not None, "do_rescale": True, "rescale_factor": self.rescale,
               "do_normalize": True, "image_mean": list(self.mean), "image_std": list(self.std),
               "do_convert_rgb": True}
        if self.crop is not None:
            out["crop_size"] = {"height": self.crop[0], "width": self.crop[1]}
        return out

    def resize(self, image: Image.Image) -> Image.Image:
        """Resize as HF and torchvision do: exact size, or shortest edge with the long edge truncated."""
        if not self.size:
            return image
        if isinstance(self.size, int):
            w, h = image.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(self.size * long / short)
            size = (self.size, new_long) if w <= h else (new_long, self.size)
        else:
            size = (self.size[1], self.size[0])
        return image.resize(size, resample=self.resample)

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> float32 [B, 3, H, W]."""
        out = []
        for image in images:
            array = np.asarray(self.resize(image.convert("RGB")), dtype=np.float32)
            if self.crop is not None:
                array = _center_crop(array, self.crop, self.crop_round)
            array = (array * np.float32(self.rescale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
            out.append(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))))
        return torch.stack(out)


def _center_crop(array: np.ndarray, crop: tuple[int, int], round_offset: bool) -> np.ndarray:
    h, w = array.shape[:2]
    ch, cw = crop
    if ch > h or cw > w:  # pad with zeros first, as both libraries do
        padded = np.zeros((max(h, ch), max(w, cw), array.shape[2]), array.dtype)
        top, left = (max(h, ch) - h) // 2, (max(w, cw) - w) // 2
        padded[top:top + h, left:left + w] = array
        array, h, w = padded, padded.shape[0], padded.shape[1]
    off = (lambda n: int(round(n / 2.0))) if round_offset else (lambda n: n // 2)
    top, left = off(h - ch), off(w - cw)
    return array[top:top + ch, left:left + cw]


# ---------------------------------------------------------------- text


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_bpe_tokenizer(vocab: dict[str, int], merges: list[str] | list[tuple[str, str]]) -> Any:
    """A `tokenizers.Tokenizer` that tokenizes exactly as CLIP's BPE (lower-case, `</w>` word ends,
    <|startoftext|> ... <|endoftext|>), built from a vocab and merges."""

    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in merges]
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
                        fuse_unk=False, unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
                                   r"|[^\s\p{L}\p{N}]+"), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", vocab["<|endoftext|>"]),
                                                      ("<|startoftext|>", vocab["<|startoftext|>"]),
                                                      trim_offsets=False, add_prefix_space=False)
    return tok


def clip_bpe_from_openai_file(path: str | Path) -> Any:
    """CLIP BPE tokenizer from OpenAI's/open_clip's `bpe_simple_vocab_16e6.txt.gz` merges file."""
    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    chars = list(bytes_to_unicode().values())
    words = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return clip_bpe_tokenizer({w: i for i, w in enumerate(words)}, merges)


@dataclass
class TextTokenizer:
    """Strings -> padded ids [B, L] and a padding mask [B, L] (True on real tokens)."""

    tokenizer: Any  # tokenizers.Tokenizer
    max_length: int = 77
    pad_id: int = 0
    pad_to_max: bool = False  # SigLIP pads every text to max_length
    special: dict[str, str] = field(default_factory=dict)  # bos_token, eos_token, pad_token, unk_token

    @classmethod
    def from_dir(cls, root: str | Path, max_length: int, pad_to_max: bool = False) -> "TextTokenizer":
        """From `tokenizer.json`, or CLIP-style `vocab.json` + `merges.txt`; pad token from tokenizer_config."""
        root = Path(root)
        if (root / "tokenizer.json").is_file():
            tok = read_tokenizer(root / "tokenizer.json")
        elif (root / "vocab.json").is_file() and (root / "merges.txt").is_file():
            vocab = json.loads((root / "vocab.json").read_text(encoding="utf-8"))
            merges = [m for m in (root / "merges.txt").read_text(encoding="utf-8").split("\n")[1:] if m.strip()]
            tok = clip_bpe_tokenizer(vocab, merges)
        else:
            raise CheckpointError(f"{root}: no tokenizer files (tokenizer.json, or vocab.json + merges.txt)")
        cfg = read_json(root / "tokenizer_config.json") if (root / "tokenizer_config.json").is_file() else {}
        special = {k: _content(cfg[k]) for k in ("bos_token", "eos_token", "pad_token", "unk_token") if cfg.get(k)}
        return cls(tok, max_length, pad_id=_token_id(tok, special.get("pad_token"), 0), pad_to_max=pad_to_max,
                   special=special)

    def save(self, out: str | Path, tokenizer_class: str = "PreTrainedTokenizerFast") -> None:
        """Write tokenizer.json and a tokenizer_config.json with the special tokens, for `transformers`."""
        self.tokenizer.save(str(Path(out) / "tokenizer.json"))
        special = {"pad_token": self.tokenizer.id_to_token(self.pad_id), **self.special}
        cfg = {"tokenizer_class": tokenizer_class, "model_max_length": self.max_length, **special}
        (Path(out) / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize, truncate to max_length (keeping special tokens) and right-pad."""
        self.tokenizer.enable_truncation(self.max_length)
        rows = [enc.ids for enc in self.tokenizer.encode_batch(list(texts))]
        length = self.max_length if self.pad_to_max else max((len(r) for r in rows), default=1)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, :len(row)] = True
        return ids, mask


def _content(token: Any) -> str:
    """Older tokenizer_config.json files store AddedToken dicts instead of strings."""
    return token.get("content", "") if isinstance(token, dict) else str(token)


def _token_id(tok: Any, token: str | None, default: int) -> int:
    found = tok.token_to_id(token) if token else None
    return default if found is None else found


# ---------------------------------------------------------------- audio


@dataclass
class LogMel:
    """Whisper's input features: 16 kHz audio padded/cut to `chunk_length` s -> log-mel [B, n_mels, frames]."""

    n_mels: int = 80
    sampling_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    chunk_length: float = 30

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "LogMel":
        """From a WhisperFeatureExtractor `preprocessor_config.json`."""
        return cls(n_mels=int(cfg.get("feature_size", 80)), sampling_rate=int(cfg.get("sampling_rate", 16000)),
                   n_fft=int(cfg.get("n_fft", 400)), hop_length=int(cfg.get("hop_length", 160)),
                   chunk_length=cfg.get("chunk_length", 30))

    def to_hf(self) -> dict[str, Any]:
        """Fields of a `preprocessor_config.json` that reproduces these features."""
        return {"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": self.n_mels,
                "sampling_rate": self.sampling_rate, "n_fft": self.n_fft, "hop_length": self.hop_length,
                "chunk_length": self.chunk_length, "padding_value": 0.0, "padding_side": "right",
                "return_attention_mask": False}

    def __call__(self, waves: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
        """Mono float waveforms at `sampling_rate` -> float32 [B, n_mels, chunk frames]."""
        n = int(self.chunk_length * self.sampling_rate)
        batch = torch.zeros(len(waves), n)
        for i, w in enumerate(waves):
            w = torch.as_tensor(np.asarray(w, dtype=np.float32)).flatten()[:n]
            batch[i, :w.numel()] = w
        stft = torch.stft(batch, self.n_fft, self.hop_length, window=torch.hann_window(self.n_fft), return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()
        filters = torch.from_numpy(mel_filters(self.n_fft, self.n_mels, self.sampling_rate)).float()
        log_spec = torch.clamp(filters.T @ power, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0

    @property
    def frames(self) -> int:
        """Number of feature frames per chunk."""
        return math.floor(self.chunk_length * self.sampling_rate / self.hop_length)
