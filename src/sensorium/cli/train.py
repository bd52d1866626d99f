"""`sensorium train symile-xor RUN` (Symile's XOR experiment) and `sensorium train unified RUN` (a unified
encoder trained from scratch on Sensorium World): YAML recipes with dotted overrides."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
    """Add `train symile-xor` and `train unified`."""
    for name, func, text in (("symile-xor", _symile_xor, "reproduce Symile's binary XOR result (CLIP vs Symile)"),
                             ("unified", _unified, "train a unified encoder from scratch on Sensorium World")):
        p = commands.add(name, func, text, group="train", overrides=True, example="train.steps=100 seeds=[0,1]")
        p.add_argument("run", help="run directory (config, checkpoints, metrics, results)")
        p.add_argument("--config", default=None, help="YAML recipe (see configs/)")
