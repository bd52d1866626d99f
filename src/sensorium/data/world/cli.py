"""`sensorium data world`: generate a Sensorium World split into WebDataset shards."""

from __future__ import annotations

import argparse
import time
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ...config import load_config
    from .generate import WorldConfig, parse_modalities, write_world

    overrides = [f"{f.name}={getattr(args, f.name)}" for f in fields(WorldConfig)
                 if getattr(args, f.name, None) is not None]
    config = load_config(WorldConfig, args.config, [*overrides, *args.set])
    names = parse_modalities(args.modalities)
    start = time.perf_counter()
    summary = write_world(args.out, args.n, args.split, args.seed, config, names, shard_size=args.shard_size,
                          workers=args.workers, progress=not args.quiet, overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    print(f"wrote {summary['n']} {args.split} samples ({', '.join(names)}) to {len(summary['shards'])} shard(s) in "
          f"{args.out} in {seconds:.1f} s ({summary['n'] / max(seconds, 1e-9):.1f} samples/s)")
    if summary["held_out_combos"]:
        print("held-out colour-shape combinations: " + ", ".join(" ".join(c) for c in summary["held_out_combos"]))
    return 0


def register(commands: Any) -> None:
    """Add `sensorium data world`."""
    from .scene import SPLITS

    parser = commands.add("world", _run, "generate Sensorium World: procedural multimodal scenes with exact "
                                         "ground truth, as WebDataset shards", group="data")
    parser.add_argument("--n", type=int, required=True, help="number of samples")
    parser.add_argument("--out", required=True, help="output folder for {split}-NNNNNN.tar and world-{split}.json")
    parser.add_argument("--modalities", default="all",
                        help="comma list of image,depth,segmentation,text,qa,audio,video,timeseries,tabular "
                             "or 'all' (audio needs espeak-ng and is the slow one)")
    parser.add_argument("--split", default="train", choices=list(SPLITS),
                        help="iid train/val/test; comp-* hold colour-shape combinations out of training; "
                             "symile-* hide a target that only image and audio together predict")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--image-size", dest="image_size", type=int, help="image/depth/segmentation side (default 64)")
    parser.add_argument("--video-frames", dest="video_frames", type=int, help="frames per clip (default 8)")
    parser.add_argument("--min-objects", dest="min_objects", type=int, help="default 1")
    parser.add_argument("--max-objects", dest="max_objects", type=int, help="default 6 (at most 8)")
    parser.add_argument("--texture", action="store_const", const=True, help="striped and dotted objects")
    parser.add_argument("--clutter", type=int, help="up to this many grey background strokes")
    parser.add_argument("--noise", type=float, help="Gaussian pixel noise std, fraction of 255")
    parser.add_argument("--config", help="YAML file of WorldConfig fields")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="WorldConfig override")
    parser.add_argument("--shard-size", dest="shard_size", type=int, default=1000, help="samples per shard")
    parser.add_argument("--workers", type=int, default=1, help="generator processes (output is identical)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing shards of this split")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
