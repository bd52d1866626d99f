"""`sensorium data build|world|inspect`: build a dataset, generate Sensorium World, count and look at data."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from sensorium.data.inspect import inspect


def _build(args: argparse.Namespace) -> int:
    from sensorium.data.builders.clipart import ClipartConfig, build

    if args.name != "clipart":
        raise ValueError(f"unknown builder {args.name!r}; available: clipart")
    config = ClipartConfig(out=args.out, audio=not args.no_audio, limit=args.limit, workers=args.workers,
                           image_size=args.image_size, **({"source": args.source} if args.source else {}))
    report = build(config, progress=not args.quiet)
    print(json.dumps({k: report[k] for k in ("written", "splits", "skipped", "seconds")}, indent=2))
    return 0


def register(commands) -> None:
    p = commands.add("build", _build, "build a built-in dataset into WebDataset shards", group="data")
    p.add_argument("name", choices=["clipart"], help="dataset to build")
    p.add_argument("--out", default="data/clipart", help="output folder (train/, val/, test/ shards + report.json)")
    p.add_argument("--source", default=None, help="folder of SVGs (default: Debian's /usr/share/openclipart/svg)")
    p.add_argument("--limit", type=int, default=None, help="build only the first N items (smoke tests)")
    p.add_argument("--no-audio", action="store_true", help="skip the spoken captions")
    p.add_argument("--workers", type=int, default=4, help="worker processes (rendering + espeak)")
    p.add_argument("--image-size", type=int, default=256, help="square PNG side in pixels")
    _register_world(commands)
    _register_inspect(commands)


def _world(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from sensorium.core.config import load_config
    from sensorium.data.world.generate import WorldConfig, parse_modalities, write_world

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


def _register_world(commands: Any) -> None:
    from sensorium.data.world.scene import SPLITS

    parser = commands.add("world", _world, "generate Sensorium World: procedural multimodal scenes with exact "
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


def _default_sheet(spec: str) -> Path:
    path = Path(spec)
    return (path if path.is_dir() else path.parent) / "contact_sheet.png"


def _inspect(args: argparse.Namespace) -> int:
    sheet = None if args.no_sheet else Path(args.sheet) if args.sheet else _default_sheet(args.spec[0])
    report = inspect(args.spec if len(args.spec) > 1 else args.spec[0], sheet, args.n, args.strict)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['samples']} samples in {report['units']} unit(s)")
    for name, count in report["modalities"].items():
        print(f"  {name:<14}{count:>8}  ({100.0 * count / max(1, report['samples']):.0f}%)")
    if report["skipped"]["total"]:
        print(f"skipped: {report['skipped']['by_reason']}")
    if "contact_sheet" in report:
        print(f"contact sheet: {report['contact_sheet']}")
    return 0


def _register_inspect(commands: Any) -> None:
    parser = commands.add("inspect", _inspect, "count samples and modalities of a dataset and draw a contact sheet",
                          group="data")
    parser.add_argument("spec", nargs="+", help="shards (dir, glob, brace pattern), a .jsonl/.csv manifest, "
                                                "COCO .json or a class folder")
    parser.add_argument("--sheet", help="contact sheet PNG path (default: contact_sheet.png beside the data)")
    parser.add_argument("--no-sheet", action="store_true", help="only count")
    parser.add_argument("--n", type=int, default=16, help="samples on the contact sheet")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad sample instead of skipping it")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
