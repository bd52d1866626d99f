"""Progressive alignment (the composer path): frozen towers' cached features, per-modality projection heads,
trained in stages. Stage 1 aligns image and text; stage 2 aligns speech onto the frozen image-text space.
A stage trains only its own heads; heads of earlier stages are frozen anchors."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sensorium.core.config import checked, save_config
from sensorium.core.device import check_device
from sensorium.core.lock import run_lock
from sensorium.data.batches import FeatureBatches
from sensorium.data.features import FeatureSet, cached_features, feature_cache_dir
from sensorium.eval.retrieval import ranks
from sensorium.interop import build_tower
from sensorium.models.aligned import AlignedConfig, AlignedModel, HeadConfig
from sensorium.objectives import LOSSES, build_loss
from sensorium.train.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)


@dataclass
class StageConfig:
    """One alignment stage: which heads it trains, which modality pairs its loss uses, and how long."""

    name: str = "image-text"
    train_heads: list[str] = field(default_factory=lambda: ["image", "text"])
    pairs: list[list[str]] = field(default_factory=lambda: [["image", "text"]])
    loss: str = checked("siglip", choices=lambda: list(LOSSES))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=300, weight_decay=0.2, eval_every=100,
                                                                   ckpt_every=100))
    # Start a new head as a copy of an aligned one when their towers share a feature space (the speech tower is
    # distilled into the text tower's space, so {"audio": "text"}); skipped when the shapes differ.
    init_from: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Called by the config loader: a stage trains some head and every pair names two modalities."""
        if not self.train_heads:
            raise ValueError(f"stage {self.name!r}: train_heads is empty; name the heads it trains, e.g. [image, text]")
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"stage {self.name!r}: pairs entry {pair} must name two different modalities")


@dataclass
class HeadsConfig:
    """Shape of the projection heads and the shared space."""

    dim: int = checked(512, min=1)
    hidden: int = checked(1024, min=1)
    dropout: float = checked(0.5, min=0, lt=1)


@dataclass
class AlignConfig:
    """A whole alignment recipe: data (a folder with train/ val/ test/ shards), towers per modality, stages."""

    data: str = "data/clipart"
    towers: dict[str, str] = field(default_factory=lambda: {"image": "efficientnet-lite0", "text": "minilm-l6",
                                                            "audio": "speech-minilm"})
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [
        StageConfig("image-text", ["image", "text"], [["image", "text"]]),
        StageConfig("speech", ["audio"], [["audio", "text"], ["audio", "image"]], init_from={"audio": "text"}),
    ])
    cache_dir: str = ""  # where tower features are cached; "" = <data>/.features (shared by runs on that data)
    device: str = "cpu"
    feature_batch_size: int = checked(64, min=1)
    strict: bool = False
    seed: int = 0

    def validate(self) -> None:
        """Called by the config loader: every modality a stage trains or pairs has a tower; stage names differ."""
        if not self.stages:
            raise ValueError("stages is empty; a recipe trains at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names {names} repeat; each stage needs its own name (its checkpoints use it)")
        for i, stage in enumerate(self.stages):
            used = [*stage.train_heads, *(m for pair in stage.pairs for m in pair), *stage.init_from,
                    *stage.init_from.values()]
            for modality in used:
                if modality not in self.towers:
                    raise ValueError(f"stages.{i} ({stage.name}) uses {modality!r} but towers has "
                                     f"{', '.join(self.towers)}; add towers.{modality}=TOWER or drop it from the stage")


def split_path(config: AlignConfig, split: str) -> Path:
    path = Path(config.data) / split
    if not path.exists():
        raise FileNotFoundError(f"{path}: split not found; build the data first (sensorium data build clipart)")
    return path


def feature_cache(config: AlignConfig) -> Path:
    """The recipe's feature cache folder (shared by every run on the same data, keyed by shards and tower)."""
    return feature_cache_dir(config.data, config.cache_dir)


def load_features(config: AlignConfig, split: str, cache_dir: Path, progress: bool = True) -> FeatureSet:
    """Cached tower features of one split for every modality in the recipe."""
    towers = {m: build_tower(name) for m, name in config.towers.items()}
    return cached_features(split_path(config, split), towers, cache_dir, device=config.device,
                           batch_size=config.feature_batch_size, strict=config.strict, progress=progress)


def val_recall(model: AlignedModel, val: FeatureSet, pairs: list[list[str]]) -> dict[str, float]:
    """Mean R@1/R@10 (both directions) on validation features for the stage's pairs."""
    out: dict[str, float] = {}
    groups = val.groups()
    for a, b in pairs:
        mask = val.present[a] & val.present[b]
        ea, eb = model.embed(a, val.features[a][mask]), model.embed(b, val.features[b][mask])
        g = groups[mask]
        for name, q, k in ((f"{a}->{b}", ea, eb), (f"{b}->{a}", eb, ea)):
            r = ranks(q, k, g, g)
            out[f"{name}/R@1"] = round(100 * (r <= 1).float().mean().item(), 2)
            out[f"{name}/R@10"] = round(100 * (r <= 10).float().mean().item(), 2)
    return out


def _copy_head(model: AlignedModel, target: str, source: str) -> None:
    """Initialise head `target` from head `source` if their shapes match (else keep the random init)."""
    src, dst = model.heads[source].state_dict(), model.heads[target].state_dict()
    if any(src[k].shape != dst[k].shape for k in dst):
        log.info("init_from %s<-%s skipped: the towers' feature sizes differ", target, source)
        return
    model.heads[target].load_state_dict(src)
    log.info("head %s initialised from the aligned %s head", target, source)


def train_stage(model: AlignedModel, stage: StageConfig, train: FeatureSet, val: FeatureSet | None,
                run_dir: Path, seed: int, device: str, progress: bool = True) -> list[dict[str, Any]]:
    """Train the stage's heads (others frozen) on its pairs; resumes from the stage's latest checkpoint."""
    for name in stage.train_heads:
        if name not in model.heads:
            raise ValueError(f"stage {stage.name!r} trains head {name!r} but the model has {model.modalities}")
    for new_head, source in stage.init_from.items():
        _copy_head(model, new_head, source)
    for m, head in model.heads.items():
        head.requires_grad_(m in stage.train_heads)
    loss_fn = build_loss(stage.loss)
    params = [p for m in stage.train_heads for p in model.heads[m].parameters()] + [model.logit_scale, model.logit_bias]
    involved = sorted({m for pair in stage.pairs for m in pair})
    torch.manual_seed(seed)
    batches = FeatureBatches(train, involved, stage.train.batch_size, seed=seed, device=device)

    def step_fn(model: AlignedModel, batch: dict) -> tuple[torch.Tensor, dict]:
        emb = {m: model.embed(m, batch[m]) for m in involved}
        losses = {}
        for a, b in stage.pairs:
            mask = batch["present"][a] & batch["present"][b]
            losses[f"{a}-{b}"] = loss_fn([emb[a], emb[b]], model.logit_scale, model.logit_bias, mask=mask,
                                         groups=batch["groups"])
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # temperature >= 0.01, as in CLIP
        return sum(losses.values()) / len(losses), {f"loss/{k}": v.item() for k, v in losses.items()}

    evaluate = (lambda m: val_recall(m.cpu() if device == "cpu" else m, val, stage.pairs)) if val is not None else None
    trainer = Trainer(model, stage.train, run_dir, name=stage.name, params=params, progress=progress)
    trainer.resume()
    history = trainer.fit(batches, step_fn, evaluate)
    for head in model.heads.values():
        head.requires_grad_(True)
    return history


def run_alignment(config: AlignConfig, run_dir: str | Path, progress: bool = True) -> AlignedModel:
    """Cache features, train every stage in order, save the model after each stage into `run_dir`/model (holding
    the run directory's lock: a second writer is refused)."""
    check_device(config.device)
    with run_lock(run_dir):
        return _run_alignment(config, Path(run_dir), progress)


def _run_alignment(config: AlignConfig, run_dir: Path, progress: bool) -> AlignedModel:
    save_config(config, run_dir / "align.yaml")
    cache = feature_cache(config)
    train = load_features(config, "train", cache, progress)
    val = load_features(config, "val", cache, progress)
    heads = {m: HeadConfig(train.features[m].shape[1], config.heads.hidden, config.heads.dropout)
             for m in config.towers}
    torch.manual_seed(config.seed)  # head init from the seed alone, not from what ran before (cached or fresh features)
    model = AlignedModel(AlignedConfig(dim=config.heads.dim, heads=heads, towers=dict(config.towers)))
    towers_info = {m: build_tower(t).describe() for m, t in config.towers.items()}
    (run_dir / "towers.json").write_text(json.dumps(towers_info, indent=2, default=str))
    for stage in config.stages:
        train_stage(model, stage, train, val, run_dir, config.seed, config.device, progress)
        model.save(run_dir / "model")
        (run_dir / "stages_done.json").write_text(json.dumps([s.name for s in config.stages[: config.stages.index(stage) + 1]]))
    return model
