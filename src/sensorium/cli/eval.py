"""`sensorium eval RUN --data SHARDS | --classify DIR [--json OUT]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _eval(args: argparse.Namespace) -> int:
    from sensorium.eval.harness import evaluate, format_table, zero_shot

    if not args.data and not args.classify:
        raise ValueError("give --data SHARDS (retrieval) and/or --classify DIR (zero-shot classification)")
    report: dict = {}
    if args.data:
        report.update(evaluate(args.run, args.data, strict=args.strict, baselines=not args.no_baselines,
                               progress=not args.quiet))
        print(format_table(report))
    if args.classify:
        result = zero_shot(args.run, args.classify, strict=args.strict)
        report.setdefault("n", result["classification"]["n"])
        report["classification"] = result["classification"]
        report.setdefault("skipped_classify", result["skipped"])
        c = result["classification"]
        print(f"zero-shot: {c['classes']} classes, n={c['n']}: top-1 {c['top1']:.1f}% top-5 {c['top5']:.1f}% "
              f"(chance {c['chance_top1']:.1f}% / {c['chance_top5']:.1f}%)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def register(commands) -> None:
    p = commands.add("eval", _eval, "retrieval metrics on shards and/or zero-shot classification of a folder")
    p.add_argument("run", help="run directory holding model/")
    p.add_argument("--data", help="WebDataset shards: folder, glob or brace pattern")
    p.add_argument("--classify", help="folder with one subfolder of images per class")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--strict", action="store_true", help="a corrupt member is an error instead of a counted skip")
    p.add_argument("--no-baselines", action="store_true", help="skip the ridge/CCA baselines")
