"""Sensorium's own dual-encoder directory, as `sensorium train clip` writes it (RUN/model): `config.json` with
`"architecture": "sensorium-dual-encoder"` (the DualEncoderConfig, image preprocessing, text context),
`model.safetensors` and `tokenizer.json` (+ `tokenizer_config.json`). Safetensors and JSON only. Loads as a
`Pretrained` (so `sensorium.load`, `sensorium checkpoint info` and `checkpoint export --to open_clip|clip` work on
it), and any dual encoder (HF CLIP, open_clip) can be written in this layout."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from sensorium.core.config import from_dict
from sensorium.core.files import CheckpointError, read_json, read_state_dict, save_state_dict, write_json
from sensorium.interop.preprocess import ImageProcessor, TextTokenizer
from sensorium.interop.pretrained import Family, Pretrained, register_family
from sensorium.models.dual_encoder import DualEncoder, DualEncoderConfig

ARCHITECTURE = "sensorium-dual-encoder"
RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def is_sensorium_clip(root: Path) -> bool:
    """A config.json whose architecture is sensorium-dual-encoder."""
    path = root / "config.json"
    if not path.is_file():
        return False
    try:
        return read_json(path).get("architecture") == ARCHITECTURE
    except CheckpointError:
        return False


def image_config(image: ImageProcessor) -> dict[str, Any]:
    """JSON fields of an ImageProcessor (resample by name)."""
    names = {v: k for k, v in RESAMPLE.items()}
    if image.resample not in names:
        raise ValueError(f"image resample mode {image.resample} has no name here; use one of {sorted(RESAMPLE)}")
    return {"size": list(image.size) if isinstance(image.size, tuple) else image.size,
            "crop": list(image.crop) if image.crop else None, "resample": names[image.resample],
            "mean": list(image.mean), "std": list(image.std), "rescale": image.rescale, "crop_round": image.crop_round}


def image_processor(cfg: dict[str, Any], where: str) -> ImageProcessor:
    """The ImageProcessor that `image_config` wrote."""
    if cfg.get("resample") not in RESAMPLE:
        raise CheckpointError(f"{where}: image.resample={cfg.get('resample')!r}; expected one of {sorted(RESAMPLE)}")
    size = cfg.get("size", 224)
    return ImageProcessor(size=tuple(size) if isinstance(size, list) else size,
                          crop=tuple(cfg["crop"]) if cfg.get("crop") else None, resample=RESAMPLE[cfg["resample"]],
                          mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), rescale=float(cfg.get("rescale", 1 / 255)),
                          crop_round=bool(cfg.get("crop_round", False)))


def save_sensorium_clip(out: Path, model: DualEncoder, image: ImageProcessor, text: TextTokenizer,
                        extra: dict[str, Any] | None = None) -> Path:
    """Write the directory: config.json, model.safetensors, tokenizer.json + tokenizer_config.json."""
    out.mkdir(parents=True, exist_ok=True)
    save_state_dict(model.state_dict(), out / "model.safetensors")
    text.save(out, "PreTrainedTokenizerFast")
    write_json(out / "config.json", {"architecture": ARCHITECTURE, "model": asdict(model.cfg),
                                     "image": image_config(image),
                                     "text": {"context_length": text.max_length, "pad_id": text.pad_id},
                                     **(extra or {})})
    return out


def load_sensorium_clip(root: Path, allow_pickle: bool = False) -> Pretrained:
    """Load the directory into a DualEncoder with its image preprocessing and tokenizer."""
    path = root / "config.json"
    cfg = read_json(path)
    try:
        model_cfg = from_dict(DualEncoderConfig, cfg["model"], f"{path}: model")
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: no valid 'model' entry ({err})") from None
    model = DualEncoder(model_cfg)
    state, files = read_state_dict(root, ("model.safetensors",), allow_pickle=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{files}: does not match {path} (missing {sorted(missing)[:5]}, unexpected "
                              f"{sorted(unexpected)[:5]})")
    text_cfg = cfg.get("text", {})
    text = TextTokenizer.from_dir(root, int(text_cfg.get("context_length", model_cfg.text.context_length)),
                                  pad_to_max=True)
    text.pad_id = int(text_cfg.get("pad_id", model_cfg.text.pad_token_id))
    return Pretrained(model.eval(), "sensorium-clip", str(root), image=image_processor(cfg.get("image", {}), str(path)),
                      text=text, config={k: v for k, v in cfg.items() if k != "model"})


def export_sensorium_clip(p: Pretrained, out: Path) -> None:
    """Any dual encoder with image preprocessing and a tokenizer, in Sensorium's layout."""
    if p.image is None or p.text is None:
        raise ValueError(f"{p.source}: a sensorium-clip directory needs both image preprocessing and a tokenizer")
    save_sensorium_clip(out, p.model, p.image, p.text, {"converted_from": {"family": p.family, "source": p.source}})


register_family(Family("sensorium-clip", detect=is_sensorium_clip, load=load_sensorium_clip,
                       export=export_sensorium_clip, model_class=DualEncoder))
