"""`sensorium data build NAME`: run a built-in dataset builder."""

from __future__ import annotations

import argparse
import json


def _build(args: argparse.Namespace) -> int:
    from .builders.clipart import ClipartConfig, build

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
