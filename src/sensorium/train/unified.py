"""Train a unified encoder from scratch on Sensorium World (image, caption, spoken caption) on the CPU in
minutes, then report retrieval for every pair of modalities and zero-shot shape and colour classification of
test images from text prompts. One recipe = one arrangement; bench/world_unified.py compares several."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from sensorium.core.config import checked, save_config
from sensorium.core.lock import run_lock
from sensorium.data.memory import MemorySet
from sensorium.data.world import COLORS, SHAPES, SIZES, WorldConfig, write_world
from sensorium.data.world.language import REGIONS, where
from sensorium.eval.retrieval import pairwise_retrieval
from sensorium.eval.unified import embed_set, zero_shot
from sensorium.models.unified import UnifiedConfig, UnifiedModel
from sensorium.nn import TransformerConfig
from sensorium.nn.tokenizers import train_bpe
from sensorium.objectives import LOSSES
from sensorium.objectives.multimodal import MISSING, MultiModalObjective
from sensorium.objectives.symile import NEGATIVE_SAMPLING
from sensorium.train.tasks import Alternating, Task
from sensorium.train.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)


@dataclass
class WorldData:
    """Which Sensorium World data to generate (once, cached under `root`) and train on."""

    root: str = "data/world-unified"
    modalities: list[str] = field(default_factory=lambda: ["image", "text", "audio"])
    n_train: int = checked(4000, min=1)
    n_val: int = checked(250, min=1)
    n_test: int = checked(500, min=1)
    image_size: int = checked(64, min=8)
    min_objects: int = checked(1, min=1)
    max_objects: int = checked(1, min=1)
    seed: int = 0
    workers: int = checked(2, min=1)
    vocab_size: int = checked(1000, min=1)


@dataclass
class ObjectiveConfig:
    """The contrastive objective over the modalities (see objectives.multimodal)."""

    kind: str = checked("clip", choices=lambda: list(LOSSES))  # clip | siglip | symile
    negative_sampling: str = checked("n", choices=NEGATIVE_SAMPLING)
    missing: str = checked("drop", choices=MISSING)  # drop | embed
    local_loss: bool = False


def _default_model() -> UnifiedConfig:
    return UnifiedConfig(tokenizers={"image": {"patch": 16}, "text": {"vocab": "", "max_length": 32},
                                     "audio": {"patch_frames": 32, "n_mels": 64}},
                         trunk=TransformerConfig(dim=128, depth=3, n_heads=4, mlp_hidden=512, fused_qkv=True),
                         embed_dim=128)


@dataclass
class UnifiedRecipe:
    """Data, model, objective and optimisation of one run."""

    data: WorldData = field(default_factory=WorldData)
    model: UnifiedConfig = field(default_factory=_default_model)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=800, lr=1e-3, weight_decay=0.05, warmup=60, batch_size=64, eval_every=200, ckpt_every=200))
    alternate: bool = False  # IMP's alternating gradient descent: each step trains one pair of modalities, in turn
    eval_batch_size: int = checked(128, min=1)
    threads: int = checked(0, min=0)  # torch CPU threads (0: leave torch's default)
    seed: int = 0

    def check_modalities(self) -> None:
        """Every data modality has a tokenizer and vice versa (checked by run_unified, not at load, so a recipe can
        still be edited in Python after loading, e.g. a tokenizer dropped)."""
        want = list(self.data.modalities)
        for name in want:
            if name not in self.model.tokenizers:
                raise ValueError(f"the data has modality {name!r} but the model has no tokenizer for it (tokenizers: "
                                 f"{', '.join(self.model.tokenizers)}); add model.tokenizers.{name} or drop it from "
                                 "data.modalities")
        unused = [m for m in self.model.tokenizers if m not in want]
        if unused:
            raise ValueError(f"model.tokenizers has {unused} but data.modalities {want} does not; drop them from "
                             "the model")


def prepare_world(data: WorldData, progress: bool = True) -> dict[str, str]:
    """Shard globs of the train/val/test splits, generating a split only when its summary does not match."""
    root = Path(data.root)
    config = WorldConfig(image_size=data.image_size, min_objects=data.min_objects, max_objects=data.max_objects)
    specs = {}
    for split, n in (("train", data.n_train), ("val", data.n_val), ("test", data.n_test)):
        summary = root / f"world-{split}.json"
        wanted = {"n": n, "seed": data.seed, "modalities": list(data.modalities), "config": asdict(config)}
        have = json.loads(summary.read_text()) if summary.exists() else {}
        if any(have.get(k) != v for k, v in wanted.items()):
            log.info("generating World %s (%d samples: %s)", split, n, ", ".join(data.modalities))
            write_world(root, n, split, data.seed, config, data.modalities, workers=data.workers, progress=progress,
                        overwrite=True)
        specs[split] = str(root / f"{split}-*.tar")
    return specs


def content_key(sample: dict[str, Any]) -> str:
    """What a World caption can say about a scene (size, colour, shape, region of each object): samples with the
    same key are interchangeable retrieval targets whatever caption template or voice they got."""
    objects = sample["json"]["objects"]
    return "|".join(sorted(f"{o['size']} {o['color']} {o['shape']} {where(SimpleNamespace(**o))}" for o in objects))


def world_prompts(attribute: str) -> dict[str, list[str]]:
    """Prompts per class for zero-shot `shape` or `color` classification of one-object scenes: every caption
    template of a single object, over every value of the other attributes and every region."""
    regions = [where(SimpleNamespace(x=(c + 0.5) / 3, y=(r + 0.5) / 3)) for r in range(3) for c in range(len(REGIONS[r]))]
    classes = SHAPES if attribute == "shape" else tuple(COLORS)
    out = {}
    for value in classes:
        prompts = []
        for size in SIZES:
            for other in (COLORS if attribute == "shape" else SHAPES):
                color, shape = (other, value) if attribute == "shape" else (value, other)
                for place in regions:
                    prompts += [f"A single {size} {color} {shape} {place}.", f"There is only a {size} {color} {shape}, "
                                f"{place}.", f"Just one object: a {size} {color} {shape} {place}."]
        out[value] = prompts
    return out


def _vocab(recipe: UnifiedRecipe, train: MemorySet) -> None:
    """Train the BPE vocabulary on the training captions (cached next to the data) unless one is given."""
    options = recipe.model.tokenizers.get("text")
    if options is None or options.get("vocab"):
        return
    path = Path(recipe.data.root) / f"bpe-{recipe.data.vocab_size}.json"
    if not path.exists():
        texts = [s["text"] for s in train.samples if s.get("text")]
        path.write_text(train_bpe(texts, recipe.data.vocab_size))
    options["vocab"] = str(path)


def run_unified(recipe: UnifiedRecipe, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Generate/load data, train (resuming if the run has checkpoints), evaluate, save model and report (holding
    the run directory's lock: a second writer is refused)."""
    recipe.check_modalities()
    with run_lock(run_dir):
        return _run_unified(recipe, Path(run_dir), progress)


def _run_unified(recipe: UnifiedRecipe, run_dir: Path, progress: bool) -> dict[str, Any]:
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    want = list(recipe.data.modalities)
    specs = prepare_world(recipe.data, progress)
    sets = {split: MemorySet(spec, want, content_key, progress=progress) for split, spec in specs.items()}
    _vocab(recipe, sets["train"])
    save_config(recipe, run_dir / "recipe.yaml")
    torch.manual_seed(recipe.seed)
    model = UnifiedModel(recipe.model)
    for name, tokenizer in model.tokenizers.items():  # fixed front ends (log-mel) once, not at every step
        if hasattr(tokenizer, "prepare"):
            for data in sets.values():
                data.map(name, tokenizer.prepare, progress)
    objective = MultiModalObjective(recipe.objective.kind, recipe.objective.negative_sampling,
                                    recipe.objective.local_loss, recipe.objective.missing, recipe.seed)
    # checkpoints hold the model and the objective (Symile's call counter), the saved model only the model
    run = torch.nn.ModuleDict({"model": model, "objective": objective})

    def make_step(names: list[str]):
        def step_fn(run: torch.nn.ModuleDict, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
            model = run["model"]
            emb = model(batch, modalities=names)
            loss, logs = objective(emb, model.logit_scale, model.logit_bias, batch["present"], groups=batch["groups"])
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)  # temperature >= 0.01, as in CLIP
            aux = model.aux_loss
            return loss + aux, {**logs, **({"moe_aux": aux.item()} if recipe.model.ffn == "moe" else {})}
        return step_fn

    def evaluate(run: torch.nn.ModuleDict) -> dict[str, float]:
        emb, present = embed_set(run["model"], sets["val"], want, recipe.eval_batch_size)
        table = pairwise_retrieval(emb, present, sets["val"].groups)["retrieval"]
        return {f"{k}/R@1": v["R@1"] for k, v in table.items()}

    size = recipe.train.batch_size
    if recipe.alternate:
        if recipe.objective.kind == "symile":
            raise ValueError("alternate trains one pair of modalities per step; Symile needs all of them at once")
        tasks = {f"{a}-{b}": Task(sets["train"].batches(size, recipe.seed + k), make_step([a, b]))
                 for k, (a, b) in enumerate(combinations(want, 2))}
        alternating = Alternating(tasks, "round_robin", recipe.seed)
        batches, step_fn = alternating.batches, alternating.step_fn
    else:
        batches, step_fn = sets["train"].batches(size, recipe.seed), make_step(want)
    trainer = Trainer(run, recipe.train, run_dir, name="unified", progress=progress)
    trainer.resume()
    history = trainer.fit(batches, step_fn, evaluate)
    seconds = trainer.elapsed  # over every resume of the run
    model.save(run_dir / "model")
    report = evaluate_unified(model, sets["test"], want, recipe.eval_batch_size)
    params = sum(p.numel() for p in model.parameters())
    report["summary"] = summarize(report, params, seconds, trainer.step, history[-1]["loss"] if history else None)
    (run_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def evaluate_unified(model: UnifiedModel, test: MemorySet, modalities: list[str], batch_size: int = 128
                     ) -> dict[str, Any]:
    """Retrieval for every pair on the test set, and zero-shot shape/colour of its images from text prompts."""
    emb, present = embed_set(model, test, modalities, batch_size)
    report = pairwise_retrieval(emb, present, test.groups)
    if "image" in emb and "text" in modalities:
        one_object = [i for i, s in enumerate(test.samples) if len(s["json"]["objects"]) == 1 and present["image"][i]]
        images = emb["image"][one_object]
        report["zero_shot"] = {}
        for attribute, key in (("shape", "shape"), ("color", "color")):
            labels = [test.samples[i]["json"]["objects"][0][key] for i in one_object]
            report["zero_shot"][attribute] = zero_shot(model, images, labels, world_prompts(attribute))
    return report


def summarize(report: dict[str, Any], params: int, seconds: float, steps: int, loss: float | None) -> dict[str, Any]:
    """The numbers of one run that go into the comparison table."""
    out: dict[str, Any] = {"params": params, "train_seconds": round(seconds, 1), "steps": steps, "final_loss": loss}
    for key, metrics in report["retrieval"].items():
        out[f"{key} R@1"] = metrics["R@1"]
        out[f"{key} R@10"] = metrics["R@10"]
    for key, metrics in report["chance"].items():
        out[f"chance {key} R@1"] = metrics["R@1"]
    for attribute, result in report.get("zero_shot", {}).items():
        out[f"zero-shot {attribute}"] = result["accuracy"]
        out[f"zero-shot {attribute} nearest prompt"] = result["nearest_prompt_accuracy"]
        out[f"zero-shot {attribute} chance"] = result["chance"]
    return out
