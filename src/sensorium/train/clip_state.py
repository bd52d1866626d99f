"""What `sensorium train clip` keeps between steps and runs: checkpoints (full model and optimizer state gathered
from DDP/FSDP2 with torch.distributed.checkpoint's state-dict API, the step, every rank's data position, RNG; written
with a manifest of hashes, verified on resume, damaged ones set aside) with exact resume, the run's metrics and
summary, the validation retrieval set, and the final `sensorium-clip` model directory."""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image
from torch import distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from sensorium.core.config import to_dict
from sensorium.core.files import CheckpointError, load_state, save_state
from sensorium.data.formats import iter_source, open_source
from sensorium.data.loader import collate
from sensorium.eval.plots import loss_curve
from sensorium.eval.retrieval import retrieval_metrics
from sensorium.interop.preprocess import OPENAI_MEAN, OPENAI_STD, ImageProcessor
from sensorium.interop.sensorium_clip import save_sensorium_clip
from sensorium.models.dual_encoder import DualEncoder, DualEncoderConfig
from sensorium.train.captions import CaptionTokens, text_tokenizer
from sensorium.train.checkpoint import checkpoints, latest_checkpoint, newest_valid, set_aside
from sensorium.train.shard_feed import ShardFeed, normalize_images

log = logging.getLogger(__name__)
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # gathered on rank 0, in CPU memory
LOAD = StateDictOptions(full_state_dict=True)  # every rank passes the whole state; FSDP2 keeps its shard
# recipe fields a resumed run must share with the run that wrote the checkpoint (others, e.g. speed options or
# train.steps, may change)
SAME_RUN = ("model", "prune_last_block", "tokenizer", "data.train", "train.batch_size", "train.seed", "train.lr",
            "train.warmup", "train.weight_decay", "train.accum", "fast.loss", "fast.local_loss")


def _world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def check_same_run(saved: Path, recipe: dict[str, Any]) -> None:
    """A clear error when a resumed run's recipe differs from the saved one where the checkpoint depends on it."""
    old = yaml.safe_load(saved.read_text()) or {}

    def get(d: dict[str, Any], key: str) -> Any:
        for part in key.split("."):
            d = d.get(part) if isinstance(d, dict) else None
        return d

    differ = [f"{k}: {get(old, k)!r} -> {get(recipe, k)!r}" for k in SAME_RUN if get(old, k) != get(recipe, k)]
    if differ:
        raise ValueError(f"{saved.parent} holds checkpoints of another recipe ({'; '.join(differ)}); resume with the "
                         f"same settings or train into a new run directory")


class Checkpointer:
    """step-NNNNNNN state directories under `directory` (the newest `keep`), metrics and summary files."""

    def __init__(self, directory: Path, keep: int, rank: int):
        self.directory, self.keep, self.rank = directory, keep, rank

    def latest(self) -> Path | None:
        """The newest checkpoint whose files verify."""
        return latest_checkpoint(self.directory)

    def any(self) -> bool:
        """Whether a checkpoint directory exists at all (cheap: nothing is hashed)."""
        return bool(checkpoints(self.directory))

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, feed: ShardFeed, elapsed: float,
             device: torch.device) -> Path | None:
        """Collective: gather model, optimizer and every rank's data position; rank 0 writes them."""
        state = {"model": get_model_state_dict(model, options=FULL),
                 "optimizer": get_optimizer_state_dict(model, optimizer, options=FULL)}
        rank, world = _world()
        positions: list[Any] = [None] * world
        if dist.is_initialized():
            dist.all_gather_object(positions, feed.state_dict())
        else:
            positions = [feed.state_dict()]
        path = None
        if rank == 0:
            state.update(step=step, elapsed=elapsed, data=json.dumps(positions), rng=torch.get_rng_state())
            if device.type == "cuda":
                state["cuda_rng"] = torch.cuda.get_rng_state(device)
            path = save_state(self.directory / f"step-{step:07d}", state)
            for stale in checkpoints(self.directory)[: -self.keep]:
                shutil.rmtree(stale, ignore_errors=True)
        _barrier()
        return path

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, metrics: Path,
               stage: str) -> dict[str, Any] | None:
        """Load the newest checkpoint that verifies into model and optimizer (every rank; rank 0 verifies it and sets
        newer damaged ones aside), restore the RNG, drop metrics written after it; returns {step, elapsed, data:
        per-rank positions}, or None without a checkpoint."""
        found: list[Any] = [None]
        if self.rank == 0:
            path, skipped = newest_valid(self.directory)
            for bad, reason in skipped:
                set_aside(bad, reason)
            if skipped:
                log.warning("skipped %d damaged checkpoint(s) (%s); resuming from %s", len(skipped),
                            "; ".join(reason for _, reason in skipped), path or "the start")
            found = [str(path) if path is not None else None]
        if dist.is_initialized():
            dist.broadcast_object_list(found, src=0)
        if found[0] is None:
            return None
        path = Path(found[0])
        state = load_state(path, verify=False)  # rank 0 has just verified it
        try:
            set_model_state_dict(model, state["model"], options=LOAD)
            set_optimizer_state_dict(model, optimizer, state["optimizer"], options=LOAD)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path}: does not fit this model and optimizer ({str(exc).splitlines()[0]}); "
                                  f"the recipe changed since it was saved: use a new run directory") from None
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        data = json.loads(state["data"])
        _, world = _world()
        if len(data) != world:
            raise ValueError(f"{path} was written by {len(data)} rank(s); resume it with the same number of ranks "
                             f"({world} now) or start a new run")
        step = int(state["step"])
        if self.rank == 0 and metrics.exists():
            metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()
                                       if _kept(line, stage, step)))
        _barrier()
        log.info("resumed from %s (step %d)", path, step)
        return {"step": step, "elapsed": float(state.get("elapsed", 0.0)), "data": data}

    @staticmethod
    def log(metrics: Path, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl."""
        with metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def plot(self, metrics: Path, out: Path) -> Path | None:
        """loss_curve.png from metrics.jsonl (rank 0; a plotting problem never loses a finished run)."""
        if self.rank != 0 or not metrics.exists():
            return None
        try:
            return loss_curve(metrics, out)
        except Exception as exc:  # noqa: BLE001
            log.warning("loss curve not drawn: %s", exc)
            return None

    @staticmethod
    def write_summary(path: Path, summary: dict[str, Any]) -> None:
        """summary.json."""
        path.write_text(json.dumps(summary, indent=1) + "\n")


def _kept(line: str, stage: str, step: int) -> bool:
    """A metrics line to keep on resume: another stage's, or this one's up to the resumed step (a line cut short by
    a crash is dropped)."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and (record.get("stage") != stage or record.get("step", 0) <= step)


def inference_image(cfg: DualEncoderConfig) -> ImageProcessor:
    """The training feed's preprocessing for inference: resize to the tower's square size (bilinear, antialiased;
    no crop), CLIP mean/std."""
    size = cfg.vision.image_size
    return ImageProcessor(size=(size, size), crop=None, resample=Image.BILINEAR, mean=OPENAI_MEAN, std=OPENAI_STD)


def write_model(out: Path, model: DualEncoder, tokenizer: Any, recipe: Any, step: int, rank: int) -> Path:
    """Collective: the trained weights as a sensorium-clip directory (written by rank 0, atomically)."""
    weights = get_model_state_dict(model, options=FULL)
    if rank == 0:
        plain = DualEncoder(model.cfg)
        plain.load_state_dict(weights)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_sensorium_clip(tmp, plain, inference_image(model.cfg), text_tokenizer(tokenizer, model.cfg.text.context_length),
                            {"trained": {"step": step, "steps": recipe.train.steps, "recipe": to_dict(recipe)}})
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    _barrier()
    return out


class ValidationSet:
    """The first `limit` image-caption pairs of `shards`, in memory: image<->text retrieval R@K, where captions
    that are the same text count as interchangeable targets."""

    def __init__(self, shards: Any, limit: int, tokenizer: Any, cfg: DualEncoderConfig):
        samples = [s for s in itertools.islice((s for s in iter_source(open_source(shards), want=["image", "text"])
                                                if "image" in s and "text" in s), limit)]
        if len(samples) < 2:
            raise ValueError(f"data.val={shards!r}: {len(samples)} sample(s) with an image and a caption; need 2+")
        batch = collate(samples, ["image", "text"])
        if "image" in batch.get("lengths", {}):
            raise ValueError(f"data.val={shards!r}: images of different sizes; write the shards at one size")
        self.images, self.cfg = batch["image"], cfg
        self.ids = CaptionTokens(tokenizer, cfg.text.context_length)(batch["text"])
        keys = [" ".join(t.lower().split()) for t in batch["text"]]
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        self.groups = torch.tensor([index[k] for k in keys])

    @torch.no_grad()
    def evaluate(self, pair: nn.Module, fast: Any, device: torch.device, batch: int = 256) -> dict[str, float]:
        """Collective under FSDP2 (every rank runs the towers): R@1/5/10 and median rank both ways."""
        image, text = [], []
        for start in range(0, len(self.ids), batch):
            pixels = normalize_images(self.images[start:start + batch], self.cfg.vision.image_size, device)
            ids = self.ids[start:start + batch].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast.bf16):
                a, b, _, _ = pair(pixels, ids)
            image.append(a.float().cpu())
            text.append(b.float().cpu())
        image, text = torch.cat(image), torch.cat(text)
        out = {f"image_to_text_{k}": v for k, v in retrieval_metrics(image, text, self.groups, self.groups).items()}
        out.update({f"text_to_image_{k}": v for k, v in retrieval_metrics(text, image, self.groups, self.groups).items()})
        return out
