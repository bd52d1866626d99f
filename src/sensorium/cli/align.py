"""`sensorium align CONFIG RUN`: progressive alignment from a YAML recipe with dotted overrides."""

from __future__ import annotations

import argparse
from pathlib import Path


def load_align_config(path: str | None, overrides: list[str]):
    """An AlignConfig from defaults, a YAML recipe (its `stages` and `towers` replace the defaults whole) and
    `key.path=value` overrides."""
    import yaml

    from sensorium.core.config import _merge, apply_overrides, to_dict
    from sensorium.train.align import AlignConfig

    data = to_dict(AlignConfig())
    if path:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        stages = loaded.pop("stages", None)
        towers = loaded.pop("towers", None)  # replaces the defaults whole: a recipe without audio has no audio head
        _merge(data, loaded, path)
        if stages is not None:
            data["stages"] = stages
        if towers is not None:
            data["towers"] = towers
    apply_overrides(data, overrides)
    return AlignConfig.from_dict(data)


def _align(args: argparse.Namespace) -> int:
    from sensorium.train.align import run_alignment

    config = load_align_config(args.config, args.overrides)
    run_alignment(config, args.run, progress=not args.quiet)
    print(f"aligned model saved to {Path(args.run) / 'model'}")
    return 0


def register(commands) -> None:
    p = commands.add("align", _align, "train projection heads that put frozen towers' features into one space "
                     "(the composer path: progressive alignment, stage by stage)", group="train", overrides=True,
                     example="heads.dim=256 stages.0.train.steps=200 seed=1")
    p.add_argument("run", help="run directory (recipe, checkpoints, metrics.jsonl, model/)")
    p.add_argument("--config", default=None, help="YAML recipe (default: configs/quickstart.yaml's values)")
