"""World VQA ablation on one GPU: several recipe variants trained side by side (one process each, sharing the GPU),
on World data generated once, each with the same time budget; then one JSON comparing them on val and test.

The variants are the committed GPU recipe (configs/vlm-world-gpu.yaml) and that recipe with one thing taken away,
so the table says what each part buys. Side by side on one GPU, every variant gets about 1/N of it: compare the
rows with each other, not with a run that had the GPU alone.

Usage:  PYTHONPATH=src python3 bench/vlm_vqa_ablation.py --out OUT [--train-seconds 300] [--only NAME ...]
        PYTHONPATH=src python3 bench/vlm_vqa_ablation.py --out /tmp/x --tiny   (CPU, proves it runs)
Writes OUT/vlm_vqa_ablation.json and OUT/<variant>/ (each variant's vlm_gpu.json, curves and examples).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

RECIPE = ROOT / "configs" / "vlm-world-gpu.yaml"
PATCHES = ["model.media.image.tower=image-patches", "model.media.image.tower_args={size: 64, patch: 8}",
           "model.media.image.train_tower=false", "stages.0.train=[projectors, lm]", "stages.1.train=[projectors, lm]"]
VARIANTS: dict[str, list[str]] = {
    "recipe": [],
    "raw_patches": PATCHES,  # raw 8x8 pixel patches (no weights) instead of the trained conv stem
    "no_encoder": ["model.media.image.projector.encoder_layers=0", "model.decoder.depth=10"],  # same depth overall
    "no_positions": ["model.media.image.projector.coords=false", "model.media.image.projector.encoder_positions=none"],
    "no_caption_stage": ["stages.0.time_budget_s=1", "stages.0.optim.steps=1",
                         "stages.1.time_budget_s={train_seconds}"],  # all of the budget on QA
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--train-seconds", type=float, default=300.0, help="training budget of every variant")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--tiny", action="store_true", help="test-sized (CPU)")
    args = parser.parse_args()
    from _machine import machine

    import torch
    import yaml

    from sensorium.train.vlm_data import DataConfig, load_samples

    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "world-cache"
    recipe = yaml.safe_load(RECIPE.read_text())
    workers = max(1, min(16, (os.cpu_count() or 2) - 1))
    start = time.time()
    if not args.tiny:  # generate every split once; the variants read it from the cache
        for cfg in recipe["data"].values():
            data = DataConfig(**{**cfg, "cache_dir": str(cache), "workers": workers})
            for split in ("train", "val", "test"):
                load_samples(data, split, recipe.get("seed", 0))
    data_seconds = round(time.time() - start, 1)
    procs = {}
    for name in args.only:
        sets = [f"data.{d}.cache_dir={cache}" for d in recipe["data"]]
        sets += [s.replace("{train_seconds}", f"{args.train_seconds:.0f}") for s in VARIANTS[name]]
        cmd = [sys.executable, str(ROOT / "bench" / "vlm_gpu.py"), "--out", str(args.out / name), "--skip",
               "throughput", "--train-seconds", str(args.train_seconds), "--total-seconds",
               str(args.train_seconds + 200)] + (["--tiny"] if args.tiny else [])
        cmd += [arg for s in sets for arg in ("--set", s)]
        log = (args.out / f"{name}.log").open("w")
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    rows = {}
    for name, proc in procs.items():
        proc.wait()
        path = args.out / name / "vlm_gpu.json"
        result = json.loads(path.read_text()).get("world_vqa", {}) if path.is_file() else {"status": "missing"}
        rows[name] = {"overrides": VARIANTS[name], "returncode": proc.returncode,
                      **{k: result.get(k) for k in ("status", "error", "train_steps", "accuracy", "by_family",
                                                    "by_type", "test")}}
    info = machine()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    report = {"machine": info, "recipe": str(RECIPE.relative_to(ROOT)), "train_seconds_each": args.train_seconds,
              "concurrent_variants": len(procs), "data_seconds": data_seconds, "tiny": args.tiny, "variants": rows,
              "total_seconds": round(time.time() - start, 1)}
    (args.out / "vlm_vqa_ablation.json").write_text(json.dumps(report, indent=1) + "\n")
    for name, row in rows.items():
        test = (row.get("test") or {}).get("by_family", {})
        print(f"{name:18s} status={row.get('status')} val={row.get('accuracy')} "
              f"test={ {k: v['accuracy'] for k, v in test.items()} }")
    return 0 if all(r.get("status") == "ok" for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
