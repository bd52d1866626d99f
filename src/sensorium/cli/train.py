"""`sensorium train clip RUN` (a CLIP-style dual encoder from WebDataset shards, one process or under torchrun),
`sensorium train symile-xor RUN` (Symile's XOR experiment) and `sensorium train unified RUN` (a unified encoder
trained from scratch on Sensorium World): YAML recipes with dotted overrides."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _clip(args: argparse.Namespace) -> int:
    from sensorium.train.clip import load_recipe, run_clip

    recipe = load_recipe(args.config, args.overrides)
    summary = run_clip(recipe, args.run, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=1))
    return 0


def _symile_xor(args: argparse.Namespace) -> int:
    from sensorium.core.config import load_config
    from sensorium.train.xor import XorConfig, plot_xor, run_xor

    config = load_config(XorConfig, args.config, args.overrides)
    run = Path(args.run)
    result = run_xor(config, run, progress=not args.quiet)
    (run / "symile_xor.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_xor(result["table"], config.losses, run / "symile_xor.png")
    print(" ".join(f"{k:>9}" for k in ["p_hat", *config.losses, "bayes"]))
    for row in result["table"]:
        print(" ".join(f"{row[k]:9.3f}" for k in ["p_hat", *config.losses, "bayes_optimal"]))
    return 0


def _unified(args: argparse.Namespace) -> int:
    from sensorium.core.config import load_config
    from sensorium.train.unified import UnifiedRecipe, run_unified

    recipe = load_config(UnifiedRecipe, args.config, args.overrides)
    report = run_unified(recipe, args.run, progress=not args.quiet)
    print(json.dumps(report["summary"], indent=1))
    return 0


def register(commands) -> None:
    """Add `train clip`, `train symile-xor` and `train unified`."""
    p = commands.add("clip", _clip, "train a CLIP-style dual encoder from WebDataset shards (png|jpg + txt); resumes "
                     "from RUN's newest checkpoint; under torchrun with strategy=ddp|fsdp", group="train",
                     overrides=True, example="data.train='shards/{000..099}.tar' train.steps=1000")
    p.add_argument("run", help="run directory (recipe, tokenizer, checkpoints, metrics, loss curve, model/)")
    p.add_argument("--config", default=None, help="YAML recipe: configs/clip/ViT-B-32.yaml, ViT-B-16.yaml, "
                   "ViT-L-14.yaml, ViT-B-16-fast.yaml (one GPU, fastest step), tiny.yaml (CPU)")
    for name, func, text in (("symile-xor", _symile_xor, "reproduce Symile's binary XOR result (CLIP vs Symile)"),
                             ("unified", _unified, "train a unified encoder from scratch on Sensorium World")):
        p = commands.add(name, func, text, group="train", overrides=True, example="train.steps=100 seeds=[0,1]")
        p.add_argument("run", help="run directory (config, checkpoints, metrics, results)")
        p.add_argument("--config", default=None, help="YAML recipe (see configs/)")
