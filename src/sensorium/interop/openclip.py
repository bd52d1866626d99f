"""open_clip checkpoints (open_clip_config.json or a bare model config + state dict) <-> Sensorium's
DualEncoder. Covered: the built-in ViT image tower and text transformer (CLIP and CustomTextCLIP layouts),
quick_gelu, tok/avg pooling, final_ln_after_pool, no_ln_pre, text pool argmax/eos/last/first, causal or
bidirectional text, linear projections with or without bias, logit bias. Not covered (clear error):
timm or ModifiedResNet image towers, HF text towers, layer scale, attentional poolers, CoCa."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sensorium.core.errors import require
from sensorium.core.files import CheckpointError, read_json, read_state_dict, save_state_dict, write_json
from sensorium.interop.preprocess import (
    OPENAI_MEAN,
    OPENAI_STD,
    ImageProcessor,
    TextTokenizer,
    clip_bpe_from_openai_file,
)
from sensorium.interop.pretrained import Family, Pretrained, register_family
from sensorium.interop.rename import fuse_qkv, invert, load_into, rename, rename_all, split_qkv
from sensorium.models.dual_encoder import DualEncoder, DualEncoderConfig, TextConfig, VisionConfig
from sensorium.nn import TransformerConfig

WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
           "model.safetensors", "pytorch_model.bin")
UNSUPPORTED = {"vision_cfg": ("timm_model_name", "ls_init_value", "attentional_pool", "patch_dropout_inference",
                              "qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn", "scale_fc"),
               "text_cfg": ("hf_model_name", "ls_init_value", "embed_cls", "qk_norm", "scaled_cosine_attn",
                            "scale_heads", "scale_attn", "scale_fc")}


def _resblocks(src: str, dst: str) -> list[tuple[str, str]]:
    """Rules for open_clip residual blocks under key prefix `src` onto `dst.transformer.blocks`."""
    pairs = [("ln_1.{p}", "norm1.{p}"), ("attn.in_proj_{p}", "attn.qkv.{p}"), ("attn.out_proj.{p}", "attn.out.{p}"),
             ("ln_2.{p}", "norm2.{p}"), ("mlp.c_fc.{p}", "mlp.fc1.{p}"), ("mlp.c_proj.{p}", "mlp.fc2.{p}")]
    return [(f"{src}transformer.resblocks.{{i}}.{a}", f"{dst}.transformer.blocks.{{i}}.{b}") for a, b in pairs]


def openclip_rules(custom_text: bool, text_linear: bool) -> list[tuple[str, str]]:
    """Key rules open_clip -> DualEncoder: `text.` prefix for CustomTextCLIP, none for CLIP;
    `text_linear` when the text projection is an nn.Linear (proj_bias) rather than a bare matrix."""
    t = "text." if custom_text else ""
    proj = [(f"{t}text_projection.{{p}}", "text.proj.{p}")] if text_linear else \
        [(f"{t}text_projection", "text.proj.weight")]
    return _resblocks("visual.", "vision") + _resblocks(t, "text") + proj + [
        ("visual.conv1.{p}", "vision.patch_embed.{p}"), ("visual.class_embedding", "vision.class_embed"),
        ("visual.positional_embedding", "vision.pos_embed"), ("visual.ln_pre.{p}", "vision.pre_norm.{p}"),
        ("visual.ln_post.{p}", "vision.post_norm.{p}"), ("visual.proj", "vision.proj.weight"),
        (f"{t}token_embedding.weight", "text.token_embed.weight"), (f"{t}positional_embedding", "text.pos_embed"),
        (f"{t}ln_final.{{p}}", "text.final_norm.{p}"), ("logit_scale", "logit_scale"), ("logit_bias", "logit_bias")]


def _transpose_projections(state: dict[str, torch.Tensor], text_linear: bool) -> dict[str, torch.Tensor]:
    """open_clip computes x @ proj; nn.Linear stores proj.T (the operation is its own inverse)."""
    keys = ["vision.proj.weight"] + ([] if text_linear else ["text.proj.weight"])
    return {k: v.T if k in keys else v for k, v in state.items()}


def _tower(c: dict[str, Any], quick_gelu: bool, width: int, heads: int) -> TransformerConfig:
    eps = (c.get("norm_kwargs") or {}).get("eps", 1e-5)
    return TransformerConfig(dim=width, depth=c.get("layers", 12), n_heads=heads,
                             mlp_hidden=int(width * c.get("mlp_ratio", 4.0)), norm_eps=eps,
                             activation="quick_gelu" if quick_gelu else "gelu")


def openclip_config(model_cfg: dict[str, Any], source: str) -> DualEncoderConfig:
    """DualEncoderConfig from an open_clip model config (`model_cfg` of open_clip_config.json)."""
    v, t = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    bad = [f"{part}.{k}" for part, keys in UNSUPPORTED.items() for k in keys if model_cfg.get(part, {}).get(k)]
    if isinstance(v.get("layers"), (list, tuple)):
        bad.append("vision_cfg.layers (ModifiedResNet)")
    if bad:
        raise CheckpointError(f"{source}: open_clip options not supported by Sensorium: {', '.join(bad)}")
    qg, embed_dim = bool(model_cfg.get("quick_gelu", False)), model_cfg["embed_dim"]
    v_width = v.get("width", 768)
    pool = {"tok": "cls", "avg": "mean"}.get(v.get("pool_type", "tok"))
    if pool is None:
        raise CheckpointError(f"{source}: vision_cfg.pool_type={v.get('pool_type')!r} not supported")
    image_size, patch = v.get("image_size", 224), v.get("patch_size", 16)
    if not isinstance(image_size, int) or not isinstance(patch, int):
        raise CheckpointError(f"{source}: only square image_size/patch_size are supported")
    vision = VisionConfig(image_size=image_size, patch_size=patch,
                          transformer=_tower(v, qg, v_width, v_width // v.get("head_width", 64)),
                          patch_bias=False, class_token=True, pre_norm=not v.get("no_ln_pre", False), pool=pool,
                          norm_after_pool=bool(v.get("final_ln_after_pool", False)), proj_dim=embed_dim)
    text_pool = t.get("pool_type", "argmax")
    text = TextConfig(vocab_size=t.get("vocab_size", 49408), context_length=t.get("context_length", 77),
                      transformer=_tower(t, qg, t.get("width", 512), t.get("heads", 8)),
                      causal=not t.get("no_causal_mask", False), mask_padding=False, pool=text_pool,
                      eos_token_id=t.get("eos_id", 2), pad_token_id=t.get("pad_id", 0),
                      proj_dim=None if t.get("proj_type") == "none" else embed_dim, proj_bias=bool(t.get("proj_bias")))
    return DualEncoderConfig(vision=vision, text=text, logit_scale=math.log(1 / 0.07),
                             logit_bias=model_cfg.get("init_logit_bias"))


def openclip_model_cfg(cfg: DualEncoderConfig) -> dict[str, Any]:
    """open_clip model config for a DualEncoder; errors name what open_clip's built-in towers lack."""
    v, t = cfg.vision, cfg.text
    acts = {v.transformer.activation, t.transformer.activation}
    bad = [f"vision.{k}" for k in ("patch_bias", "proj_bias") if getattr(v, k)]
    bad += ["vision.class_token=False"] if not v.class_token else []
    bad += [f"vision.pool={v.pool!r}"] if v.pool not in ("cls", "mean") else []
    bad += [f"activations {sorted(acts)}"] if acts - {"gelu", "quick_gelu"} or len(acts) > 1 else []
    bad += ["vision.proj_dim=None"] if not v.proj_dim else []
    if bad:
        raise ValueError(f"cannot export as open_clip: {', '.join(bad)}")
    norm = lambda c: {"norm_kwargs": {"eps": c.norm_eps}} if c.norm_eps != 1e-5 else {}  # noqa: E731
    vision = {"image_size": v.image_size, "patch_size": v.patch_size, "width": v.transformer.dim,
              "layers": v.transformer.depth, "head_width": v.transformer.dim // v.transformer.n_heads,
              "mlp_ratio": v.transformer.mlp_hidden / v.transformer.dim, "no_ln_pre": not v.pre_norm,
              "pool_type": "tok" if v.pool == "cls" else "avg", "final_ln_after_pool": v.norm_after_pool,
              **norm(v.transformer)}
    text = {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.transformer.dim,
            "heads": t.transformer.n_heads, "layers": t.transformer.depth,
            "mlp_ratio": t.transformer.mlp_hidden / t.transformer.dim, "no_causal_mask": not t.causal,
            "pool_type": t.pool, "eos_id": t.eos_token_id, "pad_id": t.pad_token_id, "proj_bias": t.proj_bias,
            **({"proj_type": "none"} if not t.proj_dim else {}), **norm(t.transformer)}
    out = {"embed_dim": v.proj_dim, "vision_cfg": vision, "text_cfg": text, "quick_gelu": acts == {"quick_gelu"},
           "custom_text": True}
    if cfg.logit_bias is not None:
        out["init_logit_bias"] = cfg.logit_bias
    return out


def _config_file(root: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(model_cfg, preprocess_cfg, path) from open_clip_config.json, or a bare model config json."""
    path = root / "open_clip_config.json"
    if path.is_file():
        cfg = read_json(path)
        if "model_cfg" not in cfg:
            raise CheckpointError(f"{path}: no 'model_cfg' entry")
        return cfg["model_cfg"], cfg.get("preprocess_cfg", {}), path
    raise CheckpointError(f"{root}: no open_clip_config.json")


def image_processor(model_cfg: dict[str, Any], pre: dict[str, Any]) -> ImageProcessor:
    """open_clip's inference transform (torchvision resize + center crop) as an ImageProcessor."""
    size = pre.get("size", model_cfg.get("vision_cfg", {}).get("image_size", 224))
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    mode = pre.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash") or (mode == "shortest" and size[0] != size[1]):
        raise CheckpointError(f"open_clip resize_mode={mode!r} with size {size} is not supported")

    return ImageProcessor(size=size[0] if mode == "shortest" else size, crop=size if mode == "shortest" else None,
                          resample=Image.BILINEAR if pre.get("interpolation") == "bilinear" else Image.BICUBIC,
                          mean=tuple(pre.get("mean", OPENAI_MEAN)), std=tuple(pre.get("std", OPENAI_STD)),
                          crop_round=True)


def text_tokenizer(root: Path, cfg: DualEncoderConfig, model_cfg: dict[str, Any]) -> TextTokenizer:
    """Tokenizer files in the directory, else open_clip's default CLIP BPE (needs open_clip installed)."""
    length = cfg.text.context_length
    if any((root / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        tok = TextTokenizer.from_dir(root, length, pad_to_max=True)
        tok.pad_id = cfg.text.pad_token_id
        return tok
    if model_cfg.get("text_cfg", {}).get("hf_tokenizer_name"):
        raise CheckpointError(f"{root}: this model uses the HF tokenizer "
                              f"{model_cfg['text_cfg']['hf_tokenizer_name']!r}; put its tokenizer.json in the directory")
    open_clip = require("open_clip", "pip install open_clip_torch --no-deps (or add tokenizer.json to the directory)")
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    return TextTokenizer(clip_bpe_from_openai_file(bpe), length, pad_id=cfg.text.pad_token_id, pad_to_max=True)


def load_openclip(root: Path, allow_pickle: bool = False) -> Pretrained:
    """Load an open_clip directory (config, weights, preprocessing, tokenizer) into a DualEncoder."""
    model_cfg, pre, path = _config_file(root)
    model = DualEncoder(openclip_config(model_cfg, str(path)))
    state, files = read_state_dict(root, WEIGHTS, allow_pickle)
    linear = model.cfg.text.proj_bias
    rules = openclip_rules(any(k.startswith("text.") for k in state), linear)
    ours = rename_all(state, rules, files, ignore=lambda k: k.rpartition(".")[2] == "attn_mask")
    ours = _transpose_projections(split_qkv(ours), linear)
    load_into(model, ours, files, source_name=lambda k: rename(k, invert(rules)) or k)
    return Pretrained(model.eval(), "open_clip", str(root), image=image_processor(model_cfg, pre),
                      text=text_tokenizer(root, model.cfg, model_cfg), config={"model_cfg": model_cfg,
                                                                               "preprocess_cfg": pre})


def is_clip_bpe(tokenizer: Any) -> bool:
    """Whether a `tokenizers.Tokenizer` is CLIP's BPE (open_clip's SimpleTokenizer tokenizes the same)."""
    return tokenizer.token_to_id("<|startoftext|>") == 49406 and tokenizer.token_to_id("<|endoftext|>") == 49407


def export_openclip(p: Pretrained, out: Path) -> None:
    """Write a DualEncoder as an open_clip directory (CustomTextCLIP layout, which open_clip loads with
    `create_model('local-dir:...')`). A tokenizer other than CLIP's BPE is saved as tokenizer.json and named in
    text_cfg.hf_tokenizer_name (this directory's absolute path), so `open_clip.get_tokenizer('local-dir:...')`
    loads it with transformers' AutoTokenizer; point it at a hub id when the directory is uploaded."""
    model: DualEncoder = p.model
    model_cfg = openclip_model_cfg(model.cfg)
    linear = model.cfg.text.proj_bias
    state = _transpose_projections(model.state_dict(), linear)
    rules = invert(openclip_rules(True, linear))
    state = {rename(k, rules): v for k, v in fuse_qkv(state).items()}
    save_state_dict(state, out / "open_clip_model.safetensors")
    image = p.image or ImageProcessor(size=model.cfg.vision.image_size, crop=(model.cfg.vision.image_size,) * 2)
    pre = {"size": model.cfg.vision.image_size, "mean": list(image.mean), "std": list(image.std),
           "interpolation": "bilinear" if image.resample == 2 else "bicubic",
           "resize_mode": "shortest" if image.crop else "squash"}
    if p.text is not None and is_clip_bpe(p.text.tokenizer):
        p.text.save(out, "CLIPTokenizer")  # open_clip's own default tokenizer
    elif p.text is not None:  # any other tokenizer: open_clip reads it from this directory through transformers
        model_cfg["text_cfg"]["hf_tokenizer_name"] = str(out.resolve())
        p.text.save(out, "PreTrainedTokenizerFast")
    write_json(out / "open_clip_config.json", {"model_cfg": model_cfg, "preprocess_cfg": pre})


register_family(Family("open_clip", detect=lambda root: (root / "open_clip_config.json").is_file(),
                       load=load_openclip, export=export_openclip, model_class=DualEncoder))
