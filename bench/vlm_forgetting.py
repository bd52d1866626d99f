"""Forgetting in the decoder recipe, CPU-sized: configs/bench-vlm-world-small.yaml (captions, then QA) trained twice,
with the QA stage replaying a tenth of caption batches and without, both scored on every stage's data after the
last stage (caption CIDEr-D beside the most frequent training caption, VQA per family).

    PYTHONPATH=src python3 bench/vlm_forgetting.py            # trains runs/bench-vlm{,-noreplay} unless present
    -> bench/results/vlm_forgetting_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _machine import RESULTS, machine

from sensorium.train.vlm import load_recipe, run_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "bench-vlm-world-small.yaml"
VARIANTS = {"replay 0.1 (the recipe)": ("runs/bench-vlm", []),
            "no replay": ("runs/bench-vlm-noreplay", ["stages.1.replay={}"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "vlm_forgetting_cpu.json")
    args = parser.parse_args()
    start = time.time()
    rows = {}
    for name, (run, overrides) in VARIANTS.items():
        run_dir = ROOT / run
        if not (run_dir / "eval.json").is_file():
            run_recipe(load_recipe(RECIPE, overrides), run_dir)
        report = json.loads((run_dir / "eval.json").read_text())
        captions, vqa = report["captions"], report["vqa"]
        rows[name] = {"command": f"sensorium train vlm {run} --config {RECIPE.relative_to(ROOT)} {' '.join(overrides)}"
                                 .strip(),
                      "train_seconds": report["train_seconds"],
                      "captions": {k: captions[k] for k in ("n", "cider_d", "bleu4", "mean_words")},
                      "most_frequent_caption": {k: captions["baseline_most_frequent_caption"][k]
                                                for k in ("cider_d", "bleu4")},
                      "vqa": {"n": vqa["n"], "accuracy": vqa["accuracy"],
                              "by_family": {k: v["accuracy"] for k, v in vqa["by_family"].items()}},
                      "examples": captions["examples"][:3]}
    summary = {name: {"caption CIDEr-D": r["captions"]["cider_d"], "VQA accuracy": r["vqa"]["accuracy"],
                      "most frequent caption CIDEr-D": r["most_frequent_caption"]["cider_d"]}
               for name, r in rows.items()}
    out = {"machine": machine(), "recipe": str(RECIPE.relative_to(ROOT)), "split": "val (World seed 0)",
           "seconds": round(time.time() - start, 1), "summary": summary, "runs": rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
