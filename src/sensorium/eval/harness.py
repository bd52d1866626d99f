"""`sensorium eval`: retrieval for every ordered pair of present modalities, side by side with chance and
closed-form linear baselines fitted on the run's training features; zero-shot classification of a folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from sensorium import modalities
from sensorium.data.features import FeatureSet, cached_features, feature_cache_dir
from sensorium.data.shards import SkipLog
from sensorium.eval.baselines import BASELINES
from sensorium.eval.retrieval import pairwise_retrieval, ranks, summarize
from sensorium.interop import build_tower
from sensorium.models.aligned import AlignedModel

log = logging.getLogger(__name__)


def load_run(run_dir: str | Path) -> AlignedModel:
    """The aligned model saved in a run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "model").exists():
        raise FileNotFoundError(f"{run_dir}: no trained model (expected {run_dir / 'model'}); run `sensorium align` first")
    return AlignedModel.load(run_dir / "model").eval()


def run_features(model: AlignedModel, spec: Any, cache_dir: Path, strict: bool = False, progress: bool = True,
                 device: str = "cpu") -> FeatureSet:
    towers = {m: build_tower(name) for m, name in model.config.towers.items() if m in model.heads}
    return cached_features(spec, towers, cache_dir, strict=strict, progress=progress, device=device)


def _train_features(run_dir: Path, model: AlignedModel, progress: bool) -> FeatureSet | None:
    """The run's training-split features (for the linear baselines), if its data is still on disk."""
    import yaml

    recipe = run_dir / "align.yaml"
    if not recipe.exists():
        return None
    config = yaml.safe_load(recipe.read_text()) or {}
    data = Path(config.get("data", "")) / "train"
    if not data.exists():
        log.warning("baselines skipped: the run's training data %s is gone", data)
        return None
    return run_features(model, data, feature_cache_dir(config["data"], config.get("cache_dir", "")), progress=progress)


@torch.no_grad()
def retrieval_report(model: AlignedModel, feats: FeatureSet, train: FeatureSet | None = None) -> dict[str, Any]:
    """Metrics for every ordered pair of modalities present in `feats` (and known to the model)."""
    present = [m for m in feats.modalities if m in model.heads and bool(feats.present[m].any())]
    groups = feats.groups()
    emb = {m: model.embed(m, feats.features[m]) for m in present}
    pairs = pairwise_retrieval(emb, {m: feats.present[m] for m in present}, groups)
    out: dict[str, Any] = {"retrieval": pairs["retrieval"], "chance": pairs["chance"],
                           "baselines": {name: {} for name in BASELINES}, "pairs_n": pairs["n"]}
    for name in pairs["retrieval"]:
        a, b = name.split("->")
        if train is None or a not in train.features or b not in train.features:
            continue
        mask, tmask = feats.present[a] & feats.present[b], train.present[a] & train.present[b]
        g = groups[mask]
        for base, cls in BASELINES.items():
            fitted = cls().fit(train.features[a][tmask], train.features[b][tmask])
            q, k = fitted.source(feats.features[a][mask]), fitted.target(feats.features[b][mask])
            out["baselines"][base][name] = summarize(ranks(q, k, g, g))
    return out


def evaluate(run_dir: str | Path, data: Any, *, strict: bool = False, baselines: bool = True,
             progress: bool = True) -> dict[str, Any]:
    """Full retrieval report of a run on shards (any WebDataset with .png/.jpg, .txt, optional .wav/.flac)."""
    run_dir = Path(run_dir)
    model = load_run(run_dir)
    feats = run_features(model, data, run_dir / "cache", strict=strict, progress=progress)
    train = _train_features(run_dir, model, progress) if baselines else None
    report = {"n": len(feats), **retrieval_report(model, feats, train), "skipped": feats.skips,
              "data": str(data), "run": str(run_dir), "towers": model.config.towers}
    if train is None:
        report.pop("baselines")
    return report


def _folder_images(directory: Path, strict: bool) -> tuple[list[str], list[Any], list[int], dict[str, Any]]:

    skips = SkipLog(strict=strict)
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{directory}: expected one subfolder of images per class")
    images, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((directory / cls).iterdir()):
            ext = path.suffix.lower().lstrip(".")
            modality = modalities.for_extension(ext)
            if modality is None or modality.name != "image":
                continue
            try:
                images.append(modality.decode(path.read_bytes(), ext))
                labels.append(label)
            except modalities.DecodeError as exc:
                skips.skip("corrupt_image", str(path), str(exc))
    return classes, images, labels, skips.as_dict()


def class_prompt(name: str) -> str:
    """Folder name -> text prompt ('hot_dogs' -> 'a picture of hot dogs')."""
    return f"a picture of {name.replace('_', ' ').replace('-', ' ').strip()}"


@torch.no_grad()
def zero_shot(run_dir: str | Path, directory: str | Path, *, strict: bool = False) -> dict[str, Any]:
    """Top-1/top-5 accuracy of zero-shot classification: nearest class prompt in the shared space."""
    model = load_run(run_dir)
    classes, images, labels, skips = _folder_images(Path(directory), strict)
    if not images:
        raise ValueError(f"{directory}: no readable images")
    text_tower = build_tower(model.config.towers["text"])
    image_tower = build_tower(model.config.towers["image"])
    t = model.embed("text", text_tower.encode([class_prompt(c) for c in classes]))
    i = model.embed("image", image_tower.encode(images))
    top = (i @ t.T).topk(min(5, len(classes)), dim=1).indices
    y = torch.tensor(labels)
    return {"classification": {"n": len(images), "classes": len(classes),
                               "top1": round(100 * (top[:, 0] == y).float().mean().item(), 2),
                               "top5": round(100 * (top == y[:, None]).any(1).float().mean().item(), 2),
                               "chance_top1": round(100 / len(classes), 2),
                               "chance_top5": round(100 * min(5, len(classes)) / len(classes), 2)},
            "skipped": skips}


def format_table(report: dict[str, Any]) -> str:
    """The retrieval report as a fixed-width table: learned, ridge, CCA and chance side by side."""
    lines = [f"{'pair':<16}{'n':>6}  {'R@1':>6}{'R@5':>7}{'R@10':>7}{'medR':>7}   {'ridge R@10':>10}{'CCA R@10':>10}"
             f"{'chance R@10':>12}"]
    for pair, m in report["retrieval"].items():
        base = report.get("baselines", {})
        ridge = base.get("ridge", {}).get(pair, {}).get("R@10", float("nan"))
        cca = base.get("cca", {}).get(pair, {}).get("R@10", float("nan"))
        lines.append(f"{pair:<16}{report['pairs_n'][pair]:>6}  {m['R@1']:>6.1f}{m['R@5']:>7.1f}{m['R@10']:>7.1f}"
                     f"{m['median_rank']:>7.0f}   {ridge:>10.1f}{cca:>10.1f}{report['chance'][pair]['R@10']:>12.1f}")
    return "\n".join(lines)
