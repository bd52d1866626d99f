"""A language decoder over any modality (LLaVA / nanoVLM style): registered towers -> projectors -> a Llama-family
causal LM. Each `<modality>` placeholder in the token ids is replaced by that item's projected tokens, so
several images or audio clips can sit anywhere in a prompt, interleaved with text."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.core.config import checked, from_dict
from sensorium.core.files import read_json, read_safetensors, save_safetensors, write_text_atomic
from sensorium.encoders.base import Tower, build_tower, to_device
from sensorium.models.generation import Generated, GenerationConfig, generate_from_embeds, stream_tokens
from sensorium.models.llama import LlamaConfig, LlamaLM
from sensorium.models.template import IGNORE, ChatTokenizer, Encoded, pad_rows, placeholder
from sensorium.nn.projector import ProjectorConfig, build_projector

log = logging.getLogger(__name__)


@dataclass
class MediaConfig:
    """One modality's path into the decoder: a registered tower (frozen or trained) and a projector."""

    tower: str = "image-patches"
    tower_args: dict[str, Any] = field(default_factory=dict)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    train_tower: bool = False


@dataclass
class VLMConfig:
    """Modalities (tower + projector each) and the decoder: a fresh Llama config or a HF Llama-family directory."""

    media: dict[str, MediaConfig] = checked(default_factory=lambda: {"image": MediaConfig()}, replace=True)
    decoder: LlamaConfig = field(default_factory=lambda: LlamaConfig(
        vocab_size=512, dim=256, depth=4, n_heads=4, n_kv_heads=2, mlp_hidden=768, max_positions=512,
        tie_embeddings=True, bos_token_id=None, eos_token_ids=[], pad_token_id=0))
    decoder_path: str = ""  # HF Llama/Qwen2/Mistral/SmolLM2 directory; overrides `decoder` when set

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TowerTokens:
    """Precomputed tower output for a batch of media items (from a feature cache): [M, T, D] and mask [M, T]."""

    tokens: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str) -> "TowerTokens":
        return TowerTokens(self.tokens.to(device, non_blocking=True), self.mask.to(device, non_blocking=True))


def init_decoder(lm: LlamaLM, std: float = 0.02) -> None:
    """GPT-2 style init for a decoder trained from scratch: N(0, std) weights, zero biases, residual outputs
    scaled by 1/sqrt(2 depth) (LlamaLM's defaults, N(0, 1) embeddings, suit loaded weights, not training)."""
    for name, p in lm.named_parameters():
        if p.dim() >= 2:
            scale = (2 * lm.cfg.depth) ** -0.5 if name.endswith(("attn.out.weight", "mlp.down.weight")) else 1.0
            nn.init.normal_(p, std=std * scale)
        elif name.endswith("bias"):
            nn.init.zeros_(p)


def resize_vocab(lm: LlamaLM, size: int) -> None:
    """Grow the decoder's embeddings (and untied LM head) to `size` rows; new rows start at the mean embedding,
    so added special tokens begin as an average token rather than noise."""
    old = lm.embed.weight
    if size <= old.shape[0]:
        return
    with torch.no_grad():
        embed = nn.Embedding(size, old.shape[1], device=old.device, dtype=old.dtype)
        embed.weight[: old.shape[0]] = old
        embed.weight[old.shape[0]:] = old.mean(0)
        lm.embed = embed
        if lm.cfg.tie_embeddings:
            lm.lm_head.weight = embed.weight
        else:
            head = nn.Linear(old.shape[1], size, bias=False, device=old.device, dtype=old.dtype)
            head.weight[: old.shape[0]] = lm.lm_head.weight
            head.weight[old.shape[0]:] = lm.lm_head.weight.mean(0)
            lm.lm_head = head
    lm.cfg.vocab_size = size


class VisionLanguageModel(nn.Module):
    """Towers (ModuleDict by modality) -> projectors (ModuleDict) -> LlamaLM; `tokenizer` rides along."""

    def __init__(self, config: VLMConfig, tokenizer: ChatTokenizer | None = None,
                 towers: dict[str, Tower] | None = None, lm: LlamaLM | None = None):
        """`lm`: a pretrained decoder (required when `config.decoder_path` is set; load it with
        `sensorium.interop.load_pretrained`); `towers`: built towers by modality (others are built by name)."""
        super().__init__()
        self.config, self.tokenizer = config, tokenizer
        if config.decoder_path:
            if lm is None:
                raise ValueError(f"decoder_path={config.decoder_path!r}: pass the loaded decoder as lm= "
                                 "(sensorium.interop.load_pretrained(path).model)")
            self.lm = lm
            if tokenizer is not None:
                resize_vocab(self.lm, tokenizer.vocab_size)
            config.decoder = self.lm.cfg
        else:
            self.lm = LlamaLM(config.decoder)
            init_decoder(self.lm)
        towers = towers or {}
        self.towers = nn.ModuleDict({m: towers.get(m) or build_tower(c.tower, **c.tower_args)
                                     for m, c in config.media.items()})
        self.projectors = nn.ModuleDict({m: build_projector(c.projector, self.towers[m].token_dim, self.lm.cfg.dim)
                                         for m, c in config.media.items()})
        for m, c in config.media.items():
            if not c.train_tower:
                self.towers[m].requires_grad_(False).eval()

    @property
    def device(self) -> torch.device:
        return self.lm.embed.weight.device

    def train(self, mode: bool = True) -> "VisionLanguageModel":
        """Train mode everywhere except frozen towers (their norms and dropout stay in eval)."""
        super().train(mode)
        for m, c in self.config.media.items():
            if not c.train_tower:
                self.towers[m].eval()
        return self

    def tower_tokens(self, modality: str, inputs: Any) -> TowerTokens:
        """Tower inputs (what `tower.prepare` returns) -> tower tokens; frozen towers run without gradients."""
        if modality not in self.towers:
            raise KeyError(f"the model has no {modality!r} input; it reads {', '.join(self.towers)}")
        train = self.config.media[modality].train_tower and torch.is_grad_enabled()
        with torch.set_grad_enabled(train):
            tokens, mask = self.towers[modality].tokens(to_device(inputs, self.device))
        return TowerTokens(tokens, mask.bool())

    def project(self, modality: str, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Tower inputs or TowerTokens -> decoder-space tokens [M, T', dim] and mask [M, T']."""
        tt = inputs.to(self.device) if isinstance(inputs, TowerTokens) else self.tower_tokens(modality, inputs)
        dtype = self.lm.embed.weight.dtype  # cached tokens are stored in float16
        return self.projectors[modality](tt.tokens.to(dtype), tt.mask)

    def splice(self, ids: torch.Tensor, padding: torch.Tensor, media: dict[str, Any],
               labels: torch.Tensor | None = None, align: str = "right"
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Replace each `<modality>` placeholder in ids [B, L] by its item's projected tokens (items in row-major
        order of their placeholders). Returns input embeddings [B, L', dim], padding [B, L'] (True = real) and
        labels [B, L'] (IGNORE on media and padding); rows are right- or left-aligned (`align`, left for
        generation). Placeholder/media count mismatches and over-long results raise ValueError."""
        if align not in ("left", "right"):
            raise ValueError(f"align must be 'left' or 'right', got {align!r}")
        if self.tokenizer is None:
            raise ValueError("the model has no tokenizer; attach a ChatTokenizer to know the placeholder ids")
        batch, length = ids.shape
        padding = padding.bool()
        width = padding.long()
        text = self.lm.embed(ids)
        items = []
        known = self.tokenizer.placeholders()
        for pid, modality in known.items():
            where = (ids == pid) & padding
            count = int(where.sum())
            if modality not in media:
                if count:
                    raise ValueError(f"{count} {placeholder(modality)} placeholder(s) in the prompt but no {modality} "
                                     "given")
                continue
            emb, mask = self.project(modality, media[modality])
            if count != emb.shape[0]:
                raise ValueError(f"{count} <{modality}> placeholder(s) in the batch but {emb.shape[0]} {modality} "
                                 "item(s) given; each item needs exactly one placeholder")
            rows, cols = where.nonzero(as_tuple=True)
            width[rows, cols] = mask.sum(1)
            items.append((rows, cols, emb.to(text.dtype), mask))
        extra = set(media) - set(known.values())
        if extra:
            raise ValueError(f"media given for {sorted(extra)} but the tokenizer has no placeholder for them")
        total = width.sum(1)
        new_len = int(total.max()) if batch else 0
        if new_len > self.lm.cfg.max_positions:
            raise ValueError(f"the prompt is {new_len} tokens once media are expanded, longer than the decoder's "
                             f"context of {self.lm.cfg.max_positions}; shorten it or use fewer media tokens")
        start = width.cumsum(1) - width
        if align == "left":
            start = start + (new_len - total)[:, None]
        is_text = padding.clone()
        for rows, cols, _, _ in items:
            is_text[rows, cols] = False
        tb, tp = is_text.nonzero(as_tuple=True)
        b_index, p_index, values = [tb], [start[tb, tp]], [text[tb, tp]]
        for rows, cols, emb, mask in items:
            slot = start[rows, cols][:, None] + mask.long().cumsum(1) - 1
            item, j = mask.nonzero(as_tuple=True)
            b_index.append(rows[item])
            p_index.append(slot[item, j])
            values.append(emb[item, j])
        b_all, p_all = torch.cat(b_index), torch.cat(p_index)
        out = text.new_zeros(batch, new_len, text.shape[-1]).index_put((b_all, p_all), torch.cat(values))
        pad_out = torch.zeros(batch, new_len, dtype=torch.bool, device=ids.device)
        pad_out[b_all, p_all] = True
        lab_out = None
        if labels is not None:
            lab_out = torch.full((batch, new_len), IGNORE, dtype=labels.dtype, device=ids.device)
            lab_out[tb, start[tb, tp]] = labels[tb, tp]
        return out, pad_out, lab_out

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-token cross-entropy on labelled positions only; batch = {ids, padding, labels, media}."""
        embeds, padding, labels = self.splice(batch["ids"].to(self.device), batch["padding"].to(self.device),
                                              batch.get("media", {}), batch["labels"].to(self.device), align="right")
        # Right-aligned rows: causal attention alone keeps real tokens off the trailing padding (flash path).
        hidden = self.lm.hidden(embeds=embeds, padding=None if bool(padding[:, 0].all()) else padding)
        target = labels[:, 1:]
        keep = target != IGNORE
        n = int(keep.sum())
        if n == 0:
            raise ValueError("no labelled token in the batch: the loss would be zero (check the template and data)")
        logits = self.lm.lm_head(hidden[:, :-1][keep]).float()
        loss = F.cross_entropy(logits, target[keep])
        acc = (logits.argmax(-1) == target[keep]).float().mean()
        return loss, {"token_acc": float(acc), "tokens": n}

    def media_inputs(self, encoded: Sequence[Encoded], media: Sequence[dict[str, list[Any]]]) -> dict[str, Any]:
        """Per-conversation raw media values ({modality: [values in placeholder order]}) -> batched tower inputs;
        a conversation whose placeholders and media disagree in number is an error naming it."""
        if len(media) != len(encoded):
            raise ValueError(f"{len(encoded)} conversations but media for {len(media)}")
        flat: dict[str, list[Any]] = {}
        for i, (enc, items) in enumerate(zip(encoded, media)):
            for m in sorted(set(enc.media) | set(items)):
                want, got = enc.media.count(m), len(items.get(m, []))
                if want != got:
                    raise ValueError(f"conversation {i}: {want} {placeholder(m)} placeholder(s) but {got} {m} "
                                     "item(s) given")
                flat.setdefault(m, []).extend(items.get(m, []))
        out = {}
        for m, values in flat.items():
            if m not in self.towers:
                raise ValueError(f"the model reads {', '.join(self.towers)}, not {m}")
            out[m] = self.towers[m].prepare(values)
        return out

    def _prompt(self, conversations: Sequence[Sequence[dict[str, str]]],
                media: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer is None:
            raise ValueError("the model has no tokenizer")
        encoded = self.tokenizer.encode_batch(conversations, generation=True)
        inputs = media if isinstance(media, dict) else self.media_inputs(encoded, media or [{} for _ in encoded])
        ids, padding = pad_rows([e.ids for e in encoded], self.tokenizer.pad_id, align="left")
        embeds, padding, _ = self.splice(ids.to(self.device), padding.to(self.device), inputs, align="left")
        return embeds, padding

    @torch.inference_mode()
    def generate(self, conversations: Sequence[Sequence[dict[str, str]]], media: Any = None,
                 config: GenerationConfig | None = None) -> list[Generated]:
        """Continue each conversation with an assistant turn. `media`: per conversation {modality: [values]}
        (decoded images, waveforms), or one dict of batched tower inputs / TowerTokens for all of them."""
        embeds, padding = self._prompt(conversations, media)
        return generate_from_embeds(self.lm, embeds, padding, config or GenerationConfig(),
                                    decode=self.tokenizer.decode, extra_eos=self.tokenizer.stop_ids)

    def stream(self, conversation: Sequence[dict[str, str]], media: dict[str, list[Any]] | None = None,
               config: GenerationConfig | None = None) -> Iterator[str]:
        """Yield the answer to one conversation piece by piece as it is decoded (stop strings never shown)."""
        config = config or GenerationConfig()
        embeds, padding = self._prompt([conversation], [media or {}])
        hold = max((len(s) for s in config.stop), default=1) - 1
        shown = 0
        rows = None
        for _, rows in stream_tokens(self.lm, embeds, padding, config, self.tokenizer.decode, self.tokenizer.stop_ids):
            text = rows.results()[0].text
            safe = len(text) if rows.done[0] else max(shown, len(text) - hold)
            if text[shown:safe] and not text[shown:safe].endswith("\ufffd"):
                yield text[shown:safe]
                shown = safe
        if rows is not None and rows.results()[0].text[shown:]:
            yield rows.results()[0].text[shown:]

    def chat(self, text: str, config: GenerationConfig | None = None, **media: Any) -> str:
        """One question about some media: `model.chat("What is this?", image=pil_image)`; a value may also be
        a list of several items. Placeholders are put before the text unless the text already holds them."""
        items = {m: v if isinstance(v, list) else [v] for m, v in media.items() if v is not None}
        if not any(placeholder(m) in text for m in items):
            text = "".join(placeholder(m) * len(v) for m, v in items.items()) + ("\n" if items else "") + text
        return self.generate([[{"role": "user", "content": text}]], [items], config)[0].text

    def save(self, directory: str | Path) -> Path:
        """config.json + model.safetensors (frozen towers left out: they rebuild from the registry) + tokenizer."""

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        frozen = tuple(f"towers.{m}." for m, c in self.config.media.items() if not c.train_tower)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith(frozen)}
        if self.lm.cfg.tie_embeddings:
            state.pop("lm.lm_head.weight", None)
        save_safetensors(state, directory / "model.safetensors")
        config = self.config.to_dict()
        config["decoder_path"] = ""  # the weights now live here
        write_text_atomic(directory / "config.json", json.dumps({"architecture": "sensorium-vlm", **config}, indent=2))
        if self.tokenizer is not None:
            self.tokenizer.save(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "VisionLanguageModel":
        """A model saved by `save`, or the `model/` of a run directory (strict: missing or unexpected tensors are
        an error naming them)."""

        directory = Path(directory)
        if not (directory / "config.json").is_file() and (directory / "model" / "config.json").is_file():
            directory = directory / "model"
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory}: no config.json; expected a model saved by `sensorium vlm train`")
        raw = read_json(directory / "config.json")
        if raw.pop("architecture", None) != "sensorium-vlm":
            raise ValueError(f"{directory / 'config.json'}: not a Sensorium VLM config")
        model = cls(from_dict(VLMConfig, raw, str(directory / "config.json")), ChatTokenizer.load(directory))
        state = read_safetensors(directory / "model.safetensors")
        if model.lm.cfg.tie_embeddings:
            state["lm.lm_head.weight"] = state["lm.embed.weight"]
        frozen = tuple(f"towers.{m}." for m, c in model.config.media.items() if not c.train_tower)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(frozen)]
        if missing or unexpected:
            raise ValueError(f"{directory}: weights do not fit the config (missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]})")
        return model.to(device).eval()
