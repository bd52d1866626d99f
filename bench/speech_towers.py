"""Which speech tower? Aligns speech onto the same frozen image-text space with each candidate audio tower and
compares test-split speech->image / speech->text retrieval. Writes bench/results/speech_towers.json.

    python bench/speech_towers.py [--data data/clipart] [--runs runs/bench-speech]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sensorium.eval.harness import evaluate, load_run, run_features
from sensorium.eval.retrieval import ranks, summarize
from _machine import machine  # bench/_machine.py: platform, CPU, versions, commit
from sensorium.train.align import AlignConfig, run_alignment
from sensorium.core.config import load_config

CANDIDATES = ("speech-minilm", "logmel-stats")
PAIRS = ("audio->image", "audio->text", "image->audio", "text->audio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/clipart")
    parser.add_argument("--runs", default="runs/bench-speech")
    parser.add_argument("--out", default="bench/results/speech_towers.json")
    args = parser.parse_args()
    results: dict = {"machine": machine(), "data": args.data, "command": "python bench/speech_towers.py", "towers": {}}
    for tower in CANDIDATES:
        run = Path(args.runs) / tower
        start = time.time()
        run_alignment(load_config(AlignConfig, "configs/quickstart.yaml", [f"data={args.data}", f"towers.audio={tower}"]),
                      run, progress=False)
        report = evaluate(run, Path(args.data) / "test", progress=False)
        results["towers"][tower] = {pair: report["retrieval"][pair] for pair in PAIRS}
        results["towers"][tower]["ridge audio->image"] = report["baselines"]["ridge"]["audio->image"]
        results["towers"][tower]["seconds"] = round(time.time() - start, 1)
        results["chance"] = {pair: report["chance"][pair] for pair in PAIRS}
        results["n"] = report["pairs_n"]["audio->image"]
        if tower == "speech-minilm":
            # The tower alone, no trained head: speech lands in MiniLM's text space, so compare directly.
            model = load_run(run)
            feats = run_features(model, Path(args.data) / "test", run / "cache", progress=False)
            mask = feats.present["audio"] & feats.present["text"]
            g = feats.groups()[mask]
            results["towers"]["speech-minilm (no head, MiniLM space)"] = {
                "audio->text": summarize(ranks(feats.features["audio"][mask], feats.features["text"][mask], g, g))}
        print(tower, json.dumps(results["towers"][tower]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
