"""`sensorium bench run FILE_OR_TASK --model PATH --out DIR` and `sensorium bench list`: the evaluation harness
(sensorium.eval.bench) with models loaded by path or packaged name, or a baseline (`--model baseline:blind`)."""

from __future__ import annotations

import argparse
import json


def _run(args: argparse.Namespace) -> int:
    from sensorium.eval.bench import run_suite
    from sensorium.eval.bench.api import files_fingerprint
    from sensorium.eval.bench.report import headline

    model = args.model
    if not model.startswith("baseline:"):
        from sensorium.inference import load

        model = load(args.model, args.device)
    only = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    result = run_suite(args.target, model, args.out, model_name=args.name or args.model, scoring=args.scoring,
                       template=args.template, circular=args.circular, limit=args.limit, strict=args.strict,
                       cache=args.cache, kind=args.kind, only=only, progress=not args.quiet,
                       model_id=files_fingerprint(args.model))
    for task, r in (result.get("tasks") or {result["task"]: result}).items():
        note = f"  ({r['not_applicable']})" if r.get("not_applicable") else ""
        unparsed = f", {r['unparsed']} unparsed" if r.get("unparsed") else ""
        unparsed += f", {r['errors']} refused" if r.get("errors") else ""
        print(f"{task:<24} {r['kind']:<15} n={r.get('n', 0):<5} {headline(r)}{unparsed}{note}")
    print(f"results: {args.out}/results.json, results.md, predictions.jsonl")
    return 0


def _list(args: argparse.Namespace) -> int:
    from sensorium.eval.bench import BUILTINS, EXTRACTORS, KINDS

    if args.json:
        print(json.dumps({"builtin": {k: v[0] for k, v in BUILTINS.items()},
                          "kinds": {k: v.description for k, v in KINDS.items()}, "extract": list(EXTRACTORS)}, indent=1))
        return 0
    print("built-in tasks (sensorium bench run NAME[/TASK] ...):")
    for name, (text, _) in BUILTINS.items():
        print(f"  {name:<14} {text}")
    print("file kinds (detected from the columns, or --kind):")
    for name, kind in KINDS.items():
        print(f"  {name:<14} {kind.description}; scoring: {', '.join(kind.modes)}")
    print(f"answer extraction rules (--extract in a bench.json task): {', '.join(EXTRACTORS)}")
    return 0


def register(commands) -> None:
    p = commands.add("run", _run, "score a model on a benchmark file, a bench.json or a built-in suite (world-bench)",
                     group="bench")
    p.add_argument("target", help="benchmark file (.tsv/.csv/.jsonl), bench.json, or world-bench[/TASK]")
    p.add_argument("--model", required=True, help="model directory or packaged name, or baseline:random | "
                   "baseline:frequent | baseline:blind")
    p.add_argument("--out", required=True, help="results folder (results.json, results.md, predictions.jsonl); an "
                   "existing predictions.jsonl of the same run is resumed")
    p.add_argument("--scoring", choices=("generate", "likelihood", "similarity"), default=None,
                   help="default: generate for a language decoder, similarity for an embedding model")
    p.add_argument("--circular", action="store_true", help="CircularEval: every rotation of the options must be right")
    p.add_argument("--limit", type=int, default=None, help="score only the first N items of each task")
    p.add_argument("--strict", action="store_true", help="an undecodable media cell is an error, not a counted skip")
    p.add_argument("--kind", default=None, help="the task kind of a single file, when its columns do not say")
    p.add_argument("--tasks", default=None, help="comma list of a suite's tasks to run (default: all)")
    p.add_argument("--template", default=None, help="similarity: the option text template, e.g. '{question} {option}'")
    p.add_argument("--cache", default="data/bench", help="where built-in suites are generated (default data/bench)")
    p.add_argument("--name", default=None, help="the model's name in the results (default: --model)")
    p.add_argument("--device", default="cpu")
    p = commands.add("list", _list, "the built-in benchmark tasks, file kinds and extraction rules", group="bench")
    p.add_argument("--json", action="store_true")
