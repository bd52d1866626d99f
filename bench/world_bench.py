"""World-Bench leaderboard: the project's models (by each scoring mode they can use) beside the baselines that expose
the suite's biases (random, most frequent answer, blind prior over the question text), every task scored with
`sensorium bench` (CircularEval on multiple choice). Writes JSON with a `summary` and a Markdown table.

    PYTHONPATH=src python3 bench/world_bench.py \\
        --model composer=runs/bench-composer --model unified=runs/bench-unified \\
        --model decoder=runs/bench-vlm:generate,likelihood --model decoder-no-replay=runs/bench-vlm-noreplay:generate
    -> bench/results/world_bench.json, bench/results/world_bench.md (runs under --work, resumable)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from _machine import RESULTS, machine

from sensorium.eval.bench import run_suite
from sensorium.eval.bench.api import files_fingerprint
from sensorium.eval.bench.baselines import BASELINES
from sensorium.eval.bench.report import leaderboard_markdown
from sensorium.eval.bench.suite import BUILTINS
from sensorium.inference import load

KEEP = ("kind", "scoring", "n", "accuracy", "vanilla_accuracy", "unparsed", "errors", "cider_d", "bleu4", "mean_words",
        "perception", "acc_plus", "not_applicable", "seconds", "template")


def compact(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one task worth keeping in the committed JSON."""
    out = {k: result[k] for k in KEEP if k in result}
    if result.get("by_category"):
        out["by_category"] = {c: v["accuracy"] for c, v in result["by_category"].items()}
    if result.get("by_l2_category"):
        out["by_l2_category"] = {c: v["accuracy"] for c, v in result["by_l2_category"].items()}
    if result.get("retrieval"):
        out["retrieval"] = {d: {k: m[k] for k in ("R@1", "R@5", "R@10")} for d, m in result["retrieval"].items()}
        out["chance"] = {d: {k: m[k] for k in ("R@1", "R@10")} for d, m in result["chance"].items()}
    if result.get("mme"):
        out["mme"] = result["mme"]
    return out


def params(model: Any) -> int:
    """Parameters of the model's trained part (heads for the composer, whole model otherwise)."""
    inner = getattr(model, "model", model)
    return sum(p.numel() for p in inner.parameters()) if hasattr(inner, "parameters") else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH[:MODE,MODE]",
                        help="a model and the scoring modes to run (default: its default mode)")
    parser.add_argument("--work", type=Path, default=Path("runs/world-bench"), help="per-run results (resumable)")
    parser.add_argument("--cache", default="data/bench", help="where World-Bench is generated")
    parser.add_argument("--out", type=Path, default=RESULTS / "world_bench.json")
    parser.add_argument("--no-circular", action="store_true")
    args = parser.parse_args()
    start = time.time()
    manifest = BUILTINS["world-bench"][1](args.cache, True)
    body = json.loads(manifest.read_text())
    circular = not args.no_circular
    entries = []
    for name in BASELINES:
        r = run_suite("world-bench", f"baseline:{name}", args.work / f"baseline-{name}", cache=args.cache,
                      circular=circular, progress=False)
        entries.append({"name": f"baseline: {name}", "scoring": "exact expected value", "results": r["tasks"]})
    for spec in args.model:
        name, _, rest = spec.partition("=")
        path, _, modes = rest.partition(":")
        model = load(path)
        for mode in (modes.split(",") if modes else [None]):
            label = f"{name} ({mode})" if mode else name
            r = run_suite("world-bench", model, args.work / label.replace(" ", "_").replace("(", "").replace(")", ""),
                          model_name=label, scoring=mode, cache=args.cache, circular=circular,
                          model_id=files_fingerprint(path))
            entries.append({"name": label, "path": path, "kind": model.kind, "params": params(model),
                            "scoring": mode or "default", "results": r["tasks"]})
    tasks = [t["name"] for t in body["tasks"]]
    table = leaderboard_markdown(entries, tasks)
    report = {"machine": machine(), "world_bench": {"manifest": str(manifest), "config": body["config"],
                                                    "items": {t["name"]: t["items"] for t in body["tasks"]},
                                                    "left_out": body.get("left_out", [])},
              "circular": circular, "seconds": round(time.time() - start, 1),
              "summary": {e["name"]: {t: (r.get("cider_d") if r["kind"] == "caption" else r.get("accuracy"))
                                      for t, r in e["results"].items()} for e in entries},
              "entries": [{**{k: v for k, v in e.items() if k != "results"},
                           "tasks": {t: compact(r) for t, r in e["results"].items()}} for e in entries]}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
