"""`sensorium train align RUN [--config RECIPE] [key=value ...]`: progressive alignment from a YAML recipe."""

from __future__ import annotations

import argparse
from pathlib import Path


def _align(args: argparse.Namespace) -> int:
    from sensorium.core.config import load_config
    from sensorium.train.align import AlignConfig, run_alignment

    config = load_config(AlignConfig, args.config, args.overrides)
    run_alignment(config, args.run, progress=not args.quiet)
    print(f"aligned model saved to {Path(args.run) / 'model'}")
    return 0


def register(commands) -> None:
    p = commands.add("align", _align, "train projection heads that put frozen towers' features into one space "
                     "(the composer path: progressive alignment, stage by stage)", group="train", overrides=True,
                     example="heads.dim=256 stages.0.train.steps=200 seed=1")
    p.add_argument("run", help="run directory (recipe, checkpoints, metrics.jsonl, model/)")
    p.add_argument("--config", default=None, help="YAML recipe (default: configs/quickstart.yaml's values)")
