"""HF transformers Llama-family checkpoints (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM;
SmolLM2 and Llama 3.2 use the Llama layout) <-> Sensorium's LlamaLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sensorium.core.files import CheckpointError, read_json, read_state_dict, save_state_dict, write_json
from sensorium.interop.hf_clip import HF_WEIGHTS
from sensorium.interop.preprocess import TextTokenizer
from sensorium.interop.pretrained import Family, Pretrained, hf_model_type, register_family
from sensorium.interop.rename import invert, load_into, rename, rename_all
from sensorium.models.llama import LlamaConfig, LlamaLM

MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}

_LAYER = [("input_layernorm", "norm1"), ("self_attn.q_proj", "attn.q"), ("self_attn.k_proj", "attn.k"),
          ("self_attn.v_proj", "attn.v"), ("self_attn.o_proj", "attn.out"), ("post_attention_layernorm", "norm2"),
          ("mlp.gate_proj", "mlp.gate"), ("mlp.up_proj", "mlp.up"), ("mlp.down_proj", "mlp.down")]
RULES = [(f"model.layers.{{i}}.{a}.{{p}}", f"transformer.blocks.{{i}}.{b}.{{p}}") for a, b in _LAYER] + [
    ("model.embed_tokens.weight", "embed.weight"), ("model.norm.weight", "norm.weight"),
    ("lm_head.weight", "lm_head.weight")]


def _ids(value: Any) -> list[int]:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [int(value)]


def llama_config_from_hf(cfg: dict[str, Any], source: str) -> LlamaConfig:
    """LlamaConfig from a HF `config.json` (rope settings in the old or the v5 `rope_parameters` form)."""
    kind = cfg.get("model_type")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if k not in cfg]
    if missing:
        raise CheckpointError(f"{source}: missing fields {', '.join(missing)}")
    if cfg.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{source}: hidden_act={cfg['hidden_act']!r} unsupported (Llama-family uses silu)")
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = float(rope.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
    if rope.get("rope_type", rope.get("type", "default")) == "default":
        rope = {}
    bias = bool(cfg.get("attention_bias", False))
    return LlamaConfig(
        vocab_size=cfg["vocab_size"], dim=cfg["hidden_size"], depth=cfg["num_hidden_layers"],
        n_heads=cfg["num_attention_heads"], n_kv_heads=cfg.get("num_key_value_heads"), head_dim=cfg.get("head_dim"),
        mlp_hidden=cfg["intermediate_size"], norm_eps=cfg.get("rms_norm_eps", 1e-6), rope_theta=theta,
        rope_scaling=rope or None, max_positions=cfg.get("max_position_embeddings", 2048),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=bias or kind == "qwen2", out_bias=bias, mlp_bias=bool(cfg.get("mlp_bias", False)),
        bos_token_id=cfg.get("bos_token_id"), eos_token_ids=_ids(cfg.get("eos_token_id")),
        pad_token_id=cfg.get("pad_token_id"))


def llama_config_to_hf(c: LlamaConfig) -> dict[str, Any]:
    """HF `config.json` for a LlamaLM (Qwen2 layout when q/k/v have biases and the output does not)."""
    kind = "qwen2" if c.qkv_bias and not c.out_bias else "llama"
    if c.qkv_bias != c.out_bias and kind == "llama":
        raise ValueError("a Llama config needs qkv_bias == out_bias (attention_bias)")
    out = {"architectures": [MODEL_TYPES[kind]], "model_type": kind, "vocab_size": c.vocab_size,
           "hidden_size": c.dim, "num_hidden_layers": c.depth, "num_attention_heads": c.n_heads,
           "num_key_value_heads": c.n_kv_heads or c.n_heads, "head_dim": c.head_dim or c.dim // c.n_heads,
           "intermediate_size": c.mlp_hidden, "rms_norm_eps": c.norm_eps, "hidden_act": "silu",
           "rope_theta": c.rope_theta, "rope_scaling": c.rope_scaling, "max_position_embeddings": c.max_positions,
           "tie_word_embeddings": c.tie_embeddings, "bos_token_id": c.bos_token_id,
           "eos_token_id": c.eos_token_ids[0] if len(c.eos_token_ids) == 1 else c.eos_token_ids,
           "pad_token_id": c.pad_token_id}
    if kind == "llama":
        out.update(attention_bias=c.qkv_bias, mlp_bias=c.mlp_bias)
    return out


def load_hf_llama(root: Path, allow_pickle: bool = False) -> Pretrained:
    """Load a HF Llama-family directory (weights, tokenizer) into a LlamaLM."""
    cfg = read_json(root / "config.json")
    model = LlamaLM(llama_config_from_hf(cfg, str(root / "config.json")))
    state, files = read_state_dict(root, HF_WEIGHTS, allow_pickle)
    ours = rename_all(state, RULES, files, ignore=lambda k: k.endswith("rotary_emb.inv_freq"))
    if model.cfg.tie_embeddings:
        if "lm_head.weight" not in ours and "embed.weight" in ours:  # tied: HF stores one copy
            ours["lm_head.weight"] = ours["embed.weight"]
    load_into(model, ours, files, source_name=lambda k: rename(k, invert(RULES)) or k)
    text = TextTokenizer.from_dir(root, model.cfg.max_positions) if (root / "tokenizer.json").is_file() else None
    return Pretrained(model.eval(), "llama", str(root), text=text, config=cfg)


def export_hf_llama(p: Pretrained, out: Path) -> None:
    """Write a LlamaLM as a HF directory (config.json, model.safetensors, tokenizer.json)."""
    model: LlamaLM = p.model
    state = model.state_dict()
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight")
    rules = invert(RULES)
    save_state_dict({rename(k, rules): v for k, v in state.items()}, out / "model.safetensors")
    write_json(out / "config.json", llama_config_to_hf(model.cfg))
    if p.text is not None:
        p.text.save(out)


register_family(Family("llama", detect=lambda root: hf_model_type(root) in MODEL_TYPES,
                       load=load_hf_llama, export=export_hf_llama, model_class=LlamaLM))
