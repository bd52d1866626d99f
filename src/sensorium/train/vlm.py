"""Training the language decoder by recipe (configs/vlm-*.yaml): a BPE tokenizer trained on the data's text
(saved as tokenizer.json in the run directory), then stages in order - e.g. projector alignment on captions,
then instruction tuning on QA - each choosing what trains (projectors, the LM fully or through LoRA, towers)
and running on the shared Trainer (checkpoints, resume, metrics). Evaluation follows the last stage."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import yaml

from sensorium.core.config import checked
from sensorium.core.device import check_device
from sensorium.core.lock import run_lock
from sensorium.eval.plots import loss_curve
from sensorium.eval.vlm import evaluate_data
from sensorium.interop import load_pretrained
from sensorium.models.template import ChatTemplate, ChatTokenizer, extend_tokenizer, train_tokenizer
from sensorium.models.vlm import VisionLanguageModel, VLMConfig
from sensorium.nn.lora import apply_lora, merge_lora
from sensorium.nn.tokenizers import read_tokenizer
from sensorium.train.trainer import TrainConfig, Trainer
from sensorium.train.vlm_data import (
    DataConfig,
    MediaStore,
    Rows,
    Samples,
    conversations,
    corpus,
    load_samples,
    tokenize,
)

log = logging.getLogger(__name__)
PARTS = ("projectors", "lm", "lora", "towers")


@dataclass
class StageConfig:
    """One training stage: its data (a key of the recipe's `data`), what trains, and for how long."""

    name: str = "vqa"
    data: str = "vqa"
    train: list[str] = checked(default_factory=lambda: ["projectors", "lm"], choices=PARTS)
    lora_rank: int = checked(8, min=1)
    lora_alpha: float = checked(16.0, gt=0)
    time_budget_s: float = checked(0.0, min=0)  # > 0: fit the step count to this budget after a short calibration
    # > 0: a safety stop only. The stage trains its fixed optim.steps (reproducible on any machine) unless it runs
    # past this many seconds; the report then names the stage and the step it stopped at
    max_seconds: float = checked(0.0, min=0)
    # earlier stages' data mixed into this stage's batches ({dataset: share of the steps}), so a later stage does not
    # erase an earlier skill (the caption stage's captioning after the QA stage)
    replay: dict[str, float] = checked(default_factory=dict, gt=0, lt=1)
    optim: TrainConfig = field(default_factory=lambda: TrainConfig(steps=500, lr=1e-3, weight_decay=0.05, warmup=50,
                                                                   batch_size=32, eval_every=250, ckpt_every=500))


@dataclass
class VLMRecipe:
    """A whole recipe: model, named datasets, stages, tokenizer size, device and evaluation size. A recipe's `data`
    (and `model.media`) replace the defaults whole; each entry starts from DataConfig's (MediaConfig's) defaults."""

    model: VLMConfig = field(default_factory=VLMConfig)
    data: dict[str, DataConfig] = checked(default_factory=lambda: {"vqa": DataConfig()}, replace=True)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    vocab_size: int = checked(512, min=1)
    template: ChatTemplate = field(default_factory=ChatTemplate)
    device: str = "cpu"
    bf16: bool = False  # bf16 autocast for training on CUDA
    eval_n: int = checked(0, min=0)  # questions (vqa) or images (caption) evaluated per dataset; 0 = the whole val split
    evaluate: list[str] = field(default_factory=list)  # datasets evaluated after training ([] = all of them)
    eval_splits: list[str] = field(default_factory=lambda: ["val"])  # e.g. [val, test]: test is never trained on
    eval_batch: int = checked(64, min=1)
    seed: int = 0

    def validate(self) -> None:
        """Called by the config loader: stages and evaluation name datasets the recipe defines."""
        if not self.stages:
            raise ValueError("stages is empty; a recipe trains at least one stage")
        for i, stage in enumerate(self.stages):
            if stage.data not in self.data:
                raise ValueError(f"stages.{i}.data = {stage.data!r}: not a dataset of the recipe "
                                 f"(data has {', '.join(self.data)})")
        for name in self.evaluate:
            if name not in self.data:
                raise ValueError(f"evaluate: {name!r} is not a dataset of the recipe (data has {', '.join(self.data)})")


class TimeUp(RuntimeError):
    """A stage ran past its hard deadline (budget + margin); the model keeps the steps it made."""


def select_parameters(model: VisionLanguageModel, stage: StageConfig) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze (or wrap with LoRA) what the stage trains; returns those parameters."""
    unknown = set(stage.train) - set(PARTS)
    if unknown or not stage.train:
        raise ValueError(f"stage {stage.name!r}: train {stage.train} must name some of {PARTS}")
    if {"lm", "lora"} <= set(stage.train):
        raise ValueError(f"stage {stage.name!r}: train the LM fully ('lm') or through LoRA ('lora'), not both")
    model.requires_grad_(False)
    params: list[torch.nn.Parameter] = []
    if "projectors" in stage.train:
        params += list(model.projectors.requires_grad_(True).parameters())
    if "lm" in stage.train:
        params += list(model.lm.requires_grad_(True).parameters())
    if "lora" in stage.train:
        params += apply_lora(model.lm, rank=stage.lora_rank, alpha=stage.lora_alpha)
    if "towers" in stage.train:
        frozen = [m for m, c in model.config.media.items() if not c.train_tower]
        if frozen:
            raise ValueError(f"stage {stage.name!r} trains towers but {frozen} are frozen (media.<m>.train_tower)")
        params += list(model.towers.requires_grad_(True).parameters())
    return [p for p in params if p.requires_grad]


@dataclass
class Prepared:
    """A dataset ready for training and evaluation: samples, tokenized rows and media stores per split."""

    config: DataConfig
    train: Samples
    val: Samples
    rows: Rows | None = None
    media: MediaStore | None = None
    val_media: MediaStore | None = None


def prepare_data(recipe: VLMRecipe, names: list[str]) -> dict[str, Prepared]:
    """Samples of the datasets `names` (train and val splits), deterministic in the recipe's seed."""
    out: dict[str, Prepared] = {}
    seen: dict[str, Samples] = {}  # datasets over the same samples (captions and QA of one World) share them

    def samples(cfg: DataConfig, split: str) -> Samples:
        key = json.dumps([cfg.source, cfg.path, cfg.n_train if split == "train" else cfg.n_val, cfg.world, split],
                         sort_keys=True)
        if key not in seen:
            seen[key] = load_samples(cfg, split, recipe.seed)
        return seen[key]

    for name in names:
        if name not in recipe.data:
            raise KeyError(f"a stage uses data {name!r} but the recipe defines {sorted(recipe.data)}")
        cfg = recipe.data[name]
        start = time.time()
        out[name] = Prepared(cfg, samples(cfg, "train"), samples(cfg, "val"))
        log.info("data %s: %d train / %d val samples in %.1fs", name, len(out[name].train), len(out[name].val),
                 time.time() - start)
    return out


def build_tokenizer(recipe: VLMRecipe, data: dict[str, Prepared], run_dir: Path) -> ChatTokenizer:
    """The run's tokenizer: reloaded from run_dir/tokenizer.json when resuming, else trained and saved there."""
    if (run_dir / "tokenizer.json").is_file():
        return ChatTokenizer.load(run_dir)
    modalities = list(recipe.model.media)
    if recipe.model.decoder_path:  # a pretrained decoder keeps its tokenizer, extended with our special tokens

        path = Path(recipe.model.decoder_path) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the pretrained decoder has no tokenizer.json")
        base = extend_tokenizer(read_tokenizer(path), recipe.template, modalities)
    else:
        texts = [t for p in data.values() for t in corpus(p.train, p.config)]
        base = train_tokenizer(texts, recipe.vocab_size, recipe.template, modalities)
    tokenizer = ChatTokenizer(base, recipe.template)
    tokenizer.save(run_dir)
    return tokenizer


def build_model(recipe: VLMRecipe, tokenizer: ChatTokenizer) -> VisionLanguageModel:
    """The model of the recipe, its decoder's vocabulary, padding and end tokens set from the tokenizer."""
    config = recipe.model
    if not config.decoder_path:  # a loaded decoder keeps its own; generation also stops at the template's marker
        config.decoder.vocab_size = tokenizer.vocab_size
        config.decoder.pad_token_id, config.decoder.eos_token_ids = tokenizer.pad_id, list(tokenizer.stop_ids)
    lm = load_pretrained(config.decoder_path).model if config.decoder_path else None
    torch.manual_seed(recipe.seed)
    return VisionLanguageModel(config, tokenizer, lm=lm).to(recipe.device)


def attach(model: VisionLanguageModel, prepared: Prepared, recipe: VLMRecipe, run_dir: Path) -> None:
    """Tokenize the training conversations and set up media stores (frozen-tower tokens cached in run_dir)."""
    if prepared.rows is not None:
        return
    convs, image_rows = conversations(prepared.train, prepared.config, recipe.seed)
    prepared.rows = tokenize(model.tokenizer, convs, image_rows)
    prepared.media = media_store(model, prepared.train, prepared.config, "train", recipe, run_dir)
    prepared.val_media = media_store(model, prepared.val, prepared.config, "val", recipe, run_dir)


def media_store(model: VisionLanguageModel, samples: Samples, cfg: DataConfig, split: str, recipe: VLMRecipe,
                run_dir: Path) -> MediaStore:
    """The images of one split as tower inputs on the recipe's device (frozen-tower tokens cached in run_dir)."""
    tag = json.dumps(asdict(cfg), sort_keys=True) + f":{split}"
    frozen = not model.config.media["image"].train_tower
    return MediaStore(samples.images, model.towers["image"], frozen, run_dir / "cache", tag,
                      device=recipe.device).to(recipe.device)


def mixed_batches(main: Callable[[int], Iterator[dict[str, Any]]],
                  replay: dict[str, tuple[float, Callable[[int], Iterator[dict[str, Any]]]]]
                  ) -> Callable[[int], Iterator[dict[str, Any]]]:
    """`batches(step)` where a share P = sum of the replay shares of the steps (step s when floor((s+1) P) >
    floor(s P): evenly spread) come from the replay streams, each in proportion to its share (the stream furthest
    behind its due count goes next), the rest from `main`. Every stream resumes at its own count, so a resumed run
    sees exactly the batches it would have seen."""
    shares = [p for p, _ in replay.values()]
    total = sum(shares)
    if total >= 1 or any(p <= 0 for p in shares):
        raise ValueError(f"replay shares {shares} must be > 0 and sum to less than 1")

    def owners() -> Iterator[int]:
        """The stream of each step in order: the index of a replay stream, or -1 for main."""
        given = [0] * len(shares)
        s = 0
        while True:
            if int((s + 1) * total) > int(s * total):
                due = sum(given) + 1
                k = max(range(len(shares)), key=lambda i: (shares[i] / total * due - given[i], -i))
                given[k] += 1
                yield k
            else:
                yield -1
            s += 1

    def iterate(step: int) -> Iterator[dict[str, Any]]:
        order = owners()
        taken = [0] * (len(shares) + 1)  # steps before `step` per replay stream, then main (index -1)
        for _ in range(step):
            taken[next(order)] += 1
        streams = [make(n) for (_, make), n in zip(replay.values(), taken)] + [main(taken[-1])]
        for k in order:
            yield next(streams[k])

    return iterate


def train_stage(model: VisionLanguageModel, stage: StageConfig, prepared: Prepared, recipe: VLMRecipe,
                run_dir: Path, progress: bool = True, others: dict[str, Prepared] | None = None
                ) -> dict[str, Any]:
    """Train one stage with the shared Trainer (resuming its latest checkpoint); LoRA is merged at the end.
    Returns the steps made, the steps planned and why it stopped early (None when it ran them all).
    `others` holds the attached datasets that `stage.replay` mixes in."""
    others = others or {}
    missing = sorted(set(stage.replay) - set(others))
    if missing:
        raise KeyError(f"stage {stage.name!r} replays {missing} but the recipe's data has {sorted(others)}")
    params = select_parameters(model, stage)
    rows, cuda = prepared.rows, recipe.device.startswith("cuda")
    assert rows is not None and prepared.media is not None
    batches = rows.batches(stage.optim.batch_size, prepared.media, recipe.seed, recipe.device)
    if stage.replay:
        batches = mixed_batches(batches, {name: (share, others[name].rows.batches(
            stage.optim.batch_size, others[name].media, recipe.seed + 1 + k, recipe.device))
            for k, (name, share) in enumerate(sorted(stage.replay.items()))})
    val_convs, val_rows = conversations(prepared.val, prepared.config, recipe.seed)
    val = tokenize(model.tokenizer, val_convs[:256], val_rows[:256])
    val_batch = val.batch(torch.arange(min(len(val), stage.optim.batch_size)), prepared.val_media, recipe.device)
    clock = {"start": None, "calibrated": stage.time_budget_s <= 0}
    trainer = Trainer(model, stage.optim, run_dir, name=stage.name, params=params, progress=progress)
    trainer.resume()
    first = trainer.step

    def step_fn(m: VisionLanguageModel, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        now = time.time()
        done = trainer.step - first
        if done == 5:  # after warm-up (allocator, kernels): time the steps that follow
            clock["start"] = now
        elif not clock["calibrated"] and done == 25:
            per_step = (now - clock["start"]) / 20
            left = stage.time_budget_s - (now - clock["t0"])
            trainer.config.steps = max(trainer.step + 1, min(trainer.config.steps, trainer.step + int(left / per_step)))
            clock["calibrated"] = True
            log.info("%s: %.1f ms/step -> %d steps in the %ds budget", stage.name, 1000 * per_step,
                     trainer.config.steps, stage.time_budget_s)
        if stage.time_budget_s > 0 and now - clock["t0"] > 1.15 * stage.time_budget_s + 10:
            raise TimeUp(f"{stage.name}: past its {stage.time_budget_s:.0f}s budget at step {trainer.step}")
        if stage.max_seconds > 0 and now - clock["t0"] > stage.max_seconds:
            raise TimeUp(f"{stage.name}: stopped by max_seconds={stage.max_seconds:g} at step {trainer.step} of "
                         f"{trainer.config.steps}")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and recipe.bf16):
            return m.loss(batch)

    def evaluate(m: VisionLanguageModel) -> dict[str, float]:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and recipe.bf16):
            loss, logs = m.loss(val_batch)
        return {"loss": round(float(loss), 4), "token_acc": round(100 * logs["token_acc"], 2)}

    clock["t0"] = time.time()
    stopped = None
    try:
        trainer.fit(batches, step_fn, evaluate)
    except TimeUp as exc:
        log.warning("%s; keeping the model as it is", exc)
        stopped = str(exc)
    if "lora" in stage.train:
        merge_lora(model.lm)
    model.requires_grad_(False)
    return {"steps": trainer.step, "planned_steps": trainer.config.steps, "stopped_early": stopped}


def held_out(prepared: Prepared, split: str, model: VisionLanguageModel, recipe: VLMRecipe, run_dir: Path) -> Prepared:
    """`prepared` with its val samples replaced by those of `split` (e.g. World's test stream, n_val scenes), for
    reporting on data never used to choose a recipe; the training rows stay as they are."""
    samples = load_samples(prepared.config, split, recipe.seed)
    media = media_store(model, samples, prepared.config, split, recipe, run_dir)
    return Prepared(prepared.config, prepared.train, samples, prepared.rows, prepared.media, media)


def run_recipe(recipe: VLMRecipe, run_dir: str | Path, progress: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Data -> tokenizer -> model -> every stage in order (the model saved to run_dir/model after each) ->
    evaluation (run_dir/eval.json) and a loss curve (run_dir/loss.png). Returns the evaluation report. Holds the
    run directory's lock: a second writer is refused."""
    check_device(recipe.device)
    with run_lock(run_dir):
        return _run_recipe(recipe, Path(run_dir), progress, evaluate)


def _run_recipe(recipe: VLMRecipe, run_dir: Path, progress: bool, evaluate: bool) -> dict[str, Any]:
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(asdict(recipe), sort_keys=False))
    data = prepare_data(recipe, list(dict.fromkeys([s.data for s in recipe.stages] +
                                                   [name for s in recipe.stages for name in s.replay])))
    tokenizer = build_tokenizer(recipe, data, run_dir)
    model = build_model(recipe, tokenizer)
    done = json.loads((run_dir / "stages_done.json").read_text()) if (run_dir / "stages_done.json").is_file() else []
    if done and (run_dir / "model" / "config.json").is_file():
        model = VisionLanguageModel.load(run_dir / "model", recipe.device)
    timings: dict[str, float] = {}
    steps: dict[str, Any] = json.loads((run_dir / "stage_steps.json").read_text()) \
        if (run_dir / "stage_steps.json").is_file() else {}
    for stage in recipe.stages:
        if stage.name in done:
            continue
        start = time.time()
        for name in [stage.data, *stage.replay]:
            attach(model, data[name], recipe, run_dir)
        steps[stage.name] = train_stage(model, stage, data[stage.data], recipe, run_dir, progress, data)
        timings[stage.name] = round(time.time() - start, 1)
        model.save(run_dir / "model")
        (run_dir / "stage_steps.json").write_text(json.dumps(steps))
        done.append(stage.name)
        (run_dir / "stages_done.json").write_text(json.dumps(done))
    if (run_dir / "metrics.jsonl").is_file():
        loss_curve(run_dir / "metrics.jsonl", run_dir / "loss.png")
    trained = {"seed": recipe.seed, "train_seconds": timings, "stages": steps}
    if not evaluate:
        return trained

    report: dict[str, Any] = {"n": 0, **trained}
    for name, prepared in data.items():
        if recipe.evaluate and name not in recipe.evaluate:
            continue
        attach(model, prepared, recipe, run_dir)
        for split in recipe.eval_splits:
            target = prepared if split == "val" else held_out(prepared, split, model, recipe, run_dir)
            key = name if split == "val" else f"{name}-{split}"
            report[key] = evaluate_data(model, target, recipe, pictures=run_dir / f"examples-{key}.png")
            report["n"] += report[key]["n"]
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2))
    return report
