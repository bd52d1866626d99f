"""HF transformers Whisper checkpoints (encoder half of WhisperModel / WhisperForConditionalGeneration,
or a bare encoder) <-> Sensorium's WhisperEncoder, with Whisper's log-mel feature extractor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sensorium.core.files import CheckpointError, read_json, read_state_dict, save_state_dict, write_json
from sensorium.interop.hf_clip import HF_WEIGHTS, hf_activation
from sensorium.interop.preprocess import LogMel
from sensorium.interop.pretrained import Family, Pretrained, hf_model_type, register_family
from sensorium.interop.rename import invert, load_into, rename, rename_all, split_qkv
from sensorium.models.whisper import WhisperEncoder, WhisperEncoderConfig
from sensorium.nn import TransformerConfig

_LAYER = [("self_attn_layer_norm", "norm1"), ("self_attn.q_proj", "attn.q"), ("self_attn.k_proj", "attn.k"),
          ("self_attn.v_proj", "attn.v"), ("self_attn.out_proj", "attn.out"), ("final_layer_norm", "norm2"),
          ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")]
_PREFIXES = ("model.encoder.", "encoder.", "")  # WhisperForConditionalGeneration, WhisperModel, encoder-only


def whisper_rules(prefix: str) -> list[tuple[str, str]]:
    """Key rules for an encoder stored under `prefix`."""
    return [(f"{prefix}layers.{{i}}.{a}.{{p}}", f"transformer.blocks.{{i}}.{b}.{{p}}") for a, b in _LAYER] + [
        (f"{prefix}conv1.{{p}}", "conv1.{p}"), (f"{prefix}conv2.{{p}}", "conv2.{p}"),
        (f"{prefix}embed_positions.weight", "pos_embed"), (f"{prefix}layer_norm.{{p}}", "final_norm.{p}")]


def whisper_config_from_hf(cfg: dict[str, Any], source: str) -> WhisperEncoderConfig:
    """WhisperEncoderConfig from a HF Whisper `config.json` (encoder fields only)."""
    try:
        t = TransformerConfig(dim=cfg["d_model"], depth=cfg["encoder_layers"], n_heads=cfg["encoder_attention_heads"],
                              mlp_hidden=cfg["encoder_ffn_dim"],
                              activation=hf_activation(cfg.get("activation_function", "gelu"), source))
        return WhisperEncoderConfig(n_mels=cfg["num_mel_bins"], n_positions=cfg["max_source_positions"], transformer=t)
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing field {exc}") from None


def whisper_config_to_hf(c: WhisperEncoderConfig) -> dict[str, Any]:
    """HF `config.json` for a WhisperModel whose encoder is `c` (decoder left at 1 tiny layer)."""
    t = c.transformer
    return {"architectures": ["WhisperModel"], "model_type": "whisper", "d_model": t.dim,
            "encoder_layers": t.depth, "encoder_attention_heads": t.n_heads, "encoder_ffn_dim": t.mlp_hidden,
            "num_mel_bins": c.n_mels, "max_source_positions": c.n_positions, "activation_function": "gelu",
            "decoder_layers": 1, "decoder_attention_heads": t.n_heads, "decoder_ffn_dim": t.mlp_hidden}


def load_hf_whisper(root: Path, allow_pickle: bool = False) -> Pretrained:
    """Load the encoder of a HF Whisper directory (decoder tensors are skipped) and its log-mel settings."""
    cfg = read_json(root / "config.json")
    model = WhisperEncoder(whisper_config_from_hf(cfg, str(root / "config.json")))
    state, files = read_state_dict(root, HF_WEIGHTS, allow_pickle)
    prefix = next((p for p in _PREFIXES if f"{p}conv1.weight" in state), None)
    if prefix is None:
        raise CheckpointError(f"{files}: no Whisper encoder tensors (conv1.weight) found")
    rules = whisper_rules(prefix)
    encoder = {k: v for k, v in state.items() if k.startswith(prefix) and not k.startswith("decoder.")}
    ours = rename_all(encoder, rules, files)
    for i in range(model.cfg.transformer.depth):  # Whisper's key projection has no bias (softmax ignores one)
        key = f"transformer.blocks.{i}.attn.k.bias"
        if key not in ours and f"transformer.blocks.{i}.attn.k.weight" in ours:
            ours[key] = ours[f"transformer.blocks.{i}.attn.k.weight"].new_zeros(model.cfg.transformer.dim)
    load_into(model, split_qkv(ours), files, source_name=lambda k: rename(k, invert(rules)) or k)
    pre = root / "preprocessor_config.json"
    audio = LogMel.from_hf(read_json(pre)) if pre.is_file() else None
    return Pretrained(model.eval(), "whisper", str(root), audio=audio, config=cfg)


def export_hf_whisper(p: Pretrained, out: Path) -> None:
    """Write the encoder as a HF WhisperModel directory (no decoder tensors: transformers initializes
    the decoder, so only `model.encoder` / `get_encoder()` outputs are meaningful)."""
    model: WhisperEncoder = p.model
    rules = invert(whisper_rules("encoder."))
    state = {rename(k, rules): v for k, v in model.state_dict().items() if not k.endswith("attn.k.bias")}
    save_state_dict(state, out / "model.safetensors")
    write_json(out / "config.json", whisper_config_to_hf(model.cfg))
    if p.audio is not None:
        write_json(out / "preprocessor_config.json", p.audio.to_hf())


register_family(Family("whisper", detect=lambda root: hf_model_type(root) == "whisper",
                       load=load_hf_whisper, export=export_hf_whisper, model_class=WhisperEncoder))
