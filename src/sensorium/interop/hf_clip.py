"""HF transformers CLIP and SigLIP checkpoints (config.json + safetensors) <-> Sensorium's DualEncoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sensorium.core.files import CheckpointError, read_json, read_state_dict, save_state_dict, write_json
from sensorium.interop.preprocess import ImageProcessor, TextTokenizer
from sensorium.interop.pretrained import Family, Pretrained, hf_model_type, register_family
from sensorium.interop.rename import fuse_qkv, invert, load_into, rename, rename_all, split_qkv
from sensorium.models.dual_encoder import DualEncoder, DualEncoderConfig, TextConfig, VisionConfig
from sensorium.nn import TransformerConfig

HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")

# HF activation names -> Sensorium's (gelu_new and gelu_pytorch_tanh are both the tanh approximation).
HF_ACT = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
          "gelu_fast": "gelu_tanh", "silu": "silu", "swish": "silu", "relu": "relu"}
ACT_HF = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu", "relu": "relu"}


def hf_activation(name: str, source: str) -> str:
    """Sensorium activation for a HF `hidden_act`, or an error naming the config."""
    if name not in HF_ACT:
        raise CheckpointError(f"{source}: unsupported hidden_act {name!r} (supported: {', '.join(HF_ACT)})")
    return HF_ACT[name]


def encoder_config(c: dict[str, Any], source: str) -> TransformerConfig:
    """TransformerConfig of a HF CLIP/SigLIP/Whisper-style encoder sub-config."""
    return TransformerConfig(dim=c["hidden_size"], depth=c["num_hidden_layers"], n_heads=c["num_attention_heads"],
                             mlp_hidden=c["intermediate_size"], norm_eps=c.get("layer_norm_eps", 1e-5),
                             activation=hf_activation(c.get("hidden_act", "gelu"), source))


def encoder_rules(hf: str, ours: str) -> list[tuple[str, str]]:
    """Key rules for one HF encoder stack (`{hf}.layers.{i}...`) onto `{ours}.blocks.{i}...`."""
    layer, block = f"{hf}.layers.{{i}}", f"{ours}.blocks.{{i}}"
    pairs = [("layer_norm1", "norm1"), ("self_attn.q_proj", "attn.q"), ("self_attn.k_proj", "attn.k"),
             ("self_attn.v_proj", "attn.v"), ("self_attn.out_proj", "attn.out"), ("layer_norm2", "norm2"),
             ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]
    return [(f"{layer}.{a}.{{p}}", f"{block}.{b}.{{p}}") for a, b in pairs]


def dual_rules(siglip: bool) -> list[tuple[str, str]]:
    """All key rules HF CLIP/SigLIP -> DualEncoder."""
    rules = encoder_rules("text_model.encoder", "text.transformer") + \
        encoder_rules("vision_model.encoder", "vision.transformer") + [
        ("text_model.embeddings.token_embedding.weight", "text.token_embed.weight"),
        ("text_model.embeddings.position_embedding.weight", "text.pos_embed"),
        ("text_model.final_layer_norm.{p}", "text.final_norm.{p}"),
        ("vision_model.embeddings.patch_embedding.{p}", "vision.patch_embed.{p}"),
        ("vision_model.embeddings.position_embedding.weight", "vision.pos_embed"),
        ("vision_model.post_layernorm.{p}", "vision.post_norm.{p}"),
        ("logit_scale", "logit_scale")]
    if siglip:
        return rules + [
            ("text_model.head.{p}", "text.proj.{p}"), ("logit_bias", "logit_bias"),
            ("vision_model.head.probe", "vision.head.probe"),
            ("vision_model.head.attention.in_proj_{p}", "vision.head.attn.qkv.{p}"),
            ("vision_model.head.attention.out_proj.{p}", "vision.head.attn.out.{p}"),
            ("vision_model.head.layernorm.{p}", "vision.head.norm.{p}"),
            ("vision_model.head.mlp.{fc}.{p}", "vision.head.mlp.{fc}.{p}")]
    return rules + [
        ("text_projection.weight", "text.proj.weight"), ("visual_projection.weight", "vision.proj.weight"),
        ("vision_model.embeddings.class_embedding", "vision.class_embed"),
        ("vision_model.pre_layrnorm.{p}", "vision.pre_norm.{p}")]


def dual_config_from_hf(cfg: dict[str, Any], source: str) -> DualEncoderConfig:
    """DualEncoderConfig from a HF CLIP or SigLIP `config.json`."""
    siglip = cfg.get("model_type") == "siglip"
    t, v = cfg.get("text_config") or {}, cfg.get("vision_config") or {}
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
               if k not in t or k not in v]
    if missing:
        raise CheckpointError(f"{source}: text_config/vision_config lack {', '.join(missing)}")
    if siglip and not v.get("vision_use_head", True):
        raise CheckpointError(f"{source}: SigLIP without vision head (vision_use_head=false) is not supported")
    eos = t.get("eos_token_id", 1 if siglip else 49407)
    text = TextConfig(vocab_size=t["vocab_size"], context_length=t.get("max_position_embeddings", 64 if siglip else 77),
                      transformer=encoder_config(t, source), causal=not siglip, mask_padding=not siglip,
                      pool="last" if siglip else ("argmax" if eos == 2 else "eos"), eos_token_id=eos,
                      pad_token_id=t.get("pad_token_id", 1), proj_bias=siglip,
                      proj_dim=(t.get("projection_size") or t["hidden_size"]) if siglip else cfg.get("projection_dim", 512))
    vision = VisionConfig(image_size=v["image_size"], patch_size=v["patch_size"], channels=v.get("num_channels", 3),
                          transformer=encoder_config(v, source), patch_bias=siglip, class_token=not siglip,
                          pre_norm=not siglip, pool="attn" if siglip else "cls",
                          proj_dim=None if siglip else cfg.get("projection_dim", 512))
    return DualEncoderConfig(vision=vision, text=text, logit_scale=cfg.get("logit_scale_init_value", 2.6592),
                             logit_bias=0.0 if siglip else None)


def _encoder_to_hf(t: TransformerConfig) -> dict[str, Any]:
    if t.norm != "layernorm" or t.activation not in ACT_HF or t.n_kv_heads not in (None, t.n_heads):
        raise ValueError(f"transformer options {t} have no HF CLIP/SigLIP equivalent")
    return {"hidden_size": t.dim, "num_hidden_layers": t.depth, "num_attention_heads": t.n_heads,
            "intermediate_size": t.mlp_hidden, "hidden_act": ACT_HF[t.activation], "layer_norm_eps": t.norm_eps}


def dual_config_to_hf(cfg: DualEncoderConfig) -> dict[str, Any]:
    """HF `config.json` for a DualEncoder; errors name the option HF cannot express."""
    v, t = cfg.vision, cfg.text
    siglip = cfg.logit_bias is not None
    want = dict(class_token=not siglip, pre_norm=not siglip, pool="attn" if siglip else "cls", patch_bias=siglip,
                norm_after_pool=False)
    bad = [f"vision.{k}={getattr(v, k)!r}" for k, val in want.items() if getattr(v, k) != val]
    bad += [f"text.causal={t.causal}"] if t.causal == siglip else []
    bad += ["text.mask_padding=True"] if siglip and t.mask_padding else []  # causal CLIP: no effect on the pool
    bad += [f"text.pool={t.pool!r}"] if (t.pool == "last") != siglip else []
    bad += [f"text.proj_bias={t.proj_bias}"] if t.proj_bias != siglip else []
    bad += [f"vision.proj_dim={v.proj_dim}"] if (v.proj_dim is None) != siglip or v.proj_bias else []
    if bad:
        raise ValueError(f"cannot export as HF {'SigLIP' if siglip else 'CLIP'}: {', '.join(bad)}")
    text = {**_encoder_to_hf(t.transformer), "vocab_size": t.vocab_size, "max_position_embeddings": t.context_length,
            "pad_token_id": t.pad_token_id, "eos_token_id": 2 if t.pool == "argmax" else t.eos_token_id}
    vision = {**_encoder_to_hf(v.transformer), "image_size": v.image_size, "patch_size": v.patch_size,
              "num_channels": v.channels}
    if siglip:
        text["projection_size"] = t.proj_dim
        return {"architectures": ["SiglipModel"], "model_type": "siglip", "text_config": text, "vision_config": vision}
    text["bos_token_id"] = t.eos_token_id - 1 if t.pool != "argmax" else 0
    return {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": t.proj_dim,
            "logit_scale_init_value": cfg.logit_scale, "text_config": text, "vision_config": vision}


def load_hf_dual(root: Path, allow_pickle: bool = False) -> Pretrained:
    """Load a HF CLIP or SigLIP directory (weights, image processor, tokenizer) into a DualEncoder."""
    cfg = read_json(root / "config.json")
    siglip = cfg["model_type"] == "siglip"
    model = DualEncoder(dual_config_from_hf(cfg, str(root / "config.json")))
    state, files = read_state_dict(root, HF_WEIGHTS, allow_pickle)
    rules = dual_rules(siglip)
    ours = split_qkv(rename_all(state, rules, files, ignore=lambda k: k.endswith("position_ids")))
    for key in ("logit_scale", "logit_bias"):  # SigLIP stores these as [1]
        if key in ours:
            ours[key] = ours[key].reshape(())
    load_into(model, ours, files, source_name=lambda k: rename(k, invert(rules)) or k)
    image = ImageProcessor.from_hf(read_json(root / "preprocessor_config.json")) \
        if (root / "preprocessor_config.json").is_file() else None
    text = TextTokenizer.from_dir(root, model.cfg.text.context_length, pad_to_max=siglip) \
        if any((root / f).is_file() for f in ("tokenizer.json", "vocab.json")) else None
    return Pretrained(model.eval(), "siglip" if siglip else "clip", str(root), image=image, text=text, config=cfg)


def export_hf_dual(p: Pretrained, out: Path) -> None:
    """Write a DualEncoder as a HF CLIP/SigLIP directory (config, safetensors, preprocessing)."""
    model: DualEncoder = p.model
    cfg = dual_config_to_hf(model.cfg)
    siglip = cfg["model_type"] == "siglip"
    state = model.state_dict()
    if siglip:
        state = {k: v.reshape(1) if k in ("logit_scale", "logit_bias") else v for k, v in state.items()}
        state = fuse_qkv(state, prefix="vision.head.attn.")  # torch MultiheadAttention's in_proj
    rules = invert(dual_rules(siglip))
    save_state_dict({rename(k, rules): v for k, v in state.items()}, out / "model.safetensors")
    write_json(out / "config.json", cfg)
    kind = "SiglipImageProcessor" if siglip else "CLIPImageProcessor"
    if p.image is not None:
        write_json(out / "preprocessor_config.json", p.image.to_hf(kind))
    if p.text is not None:
        p.text.save(out, "PreTrainedTokenizerFast" if siglip else "CLIPTokenizer")


for _name in ("clip", "siglip"):
    register_family(Family(_name, detect=lambda root, n=_name: hf_model_type(root) == n,
                           load=load_hf_dual, export=export_hf_dual, model_class=DualEncoder))
