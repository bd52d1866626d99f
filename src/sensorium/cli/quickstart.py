"""`sensorium quickstart`: the main job. Builds the openclipart data (if absent), caches frozen-tower features,
aligns image+text then speech onto them, evaluates on the test split against chance and linear baselines,
runs zero-shot classification of test images by clipart category, and writes a report with pictures."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def build_classify_folder(test_dir: Path, out: Path, min_per_class: int = 5) -> Path | None:
    """Test images sorted into one folder per top-level clipart category with at least `min_per_class` images
    (the zero-shot task); None when fewer than two categories qualify (tiny smoke runs)."""
    from sensorium.data.shards import expand_shards, iter_raw

    by_class: dict[str, list[tuple[str, bytes]]] = {}
    for shard in expand_shards(test_dir):
        for raw in iter_raw(shard):
            if "png" not in raw or "json" not in raw:
                continue
            category = json.loads(raw["json"]).get("category", "").split("/")[0]
            if category:
                by_class.setdefault(category, []).append((raw["__key__"], raw["png"]))
    kept = {c: rows for c, rows in by_class.items() if len(rows) >= min_per_class}
    if len(kept) < 2:
        return None
    for category, rows in kept.items():
        folder = out / category
        folder.mkdir(parents=True, exist_ok=True)
        for key, png in rows:
            (folder / f"{key}.png").write_bytes(png)
    return out


def retrieval_examples(run_dir: Path, test_dir: Path, query: str, n_queries: int = 6, k: int = 5) -> list[dict]:
    """Rows for a hit grid: the first test captions/clips as queries, their top-k test images."""
    from sensorium.data.shards import iter_samples
    from sensorium.eval.harness import load_run, run_features

    model = load_run(run_dir)
    feats = run_features(model, test_dir, run_dir / "cache", progress=False)
    mask = feats.present[query] & feats.present["image"]
    rows_idx = mask.nonzero().squeeze(1)
    with torch.no_grad():
        q = model.embed(query, feats.features[query][rows_idx])
        g = model.embed("image", feats.features["image"][rows_idx])
    groups = feats.groups()[rows_idx]
    picks = torch.linspace(0, len(rows_idx) - 1, n_queries).long().tolist()
    needed = {int(rows_idx[j]) for i in picks for j in (q[i] @ g.T).topk(k).indices.tolist()}
    images: dict[int, Any] = {}
    for idx, sample in enumerate(iter_samples(test_dir, want=["image"])):
        if idx in needed:
            images[idx] = sample["image"]
    out = []
    for i in picks:
        scores = q[i] @ g.T
        top = scores.topk(k)
        label = feats.texts[int(rows_idx[i])] or ""
        out.append({"query": (f"[{query}] " if query != "text" else "") + label,
                    "hits": [{"image": images.get(int(rows_idx[j])), "score": float(s),
                              "correct": bool(groups[j] == groups[i])} for s, j in zip(top.values.tolist(), top.indices.tolist())]})
    return out


def run_quickstart(run_dir: str | Path = "runs/quickstart", data: str | Path = "data/clipart",
                   config_path: str | None = None, overrides: list[str] | None = None, limit: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Everything the README's main command does; returns the report (also written to RUN/report.json)."""
    from sensorium.core.config import load_config
    from sensorium.data.builders.clipart import BUILDER_VERSION, ClipartConfig, build
    from sensorium.eval.harness import evaluate, format_table, zero_shot
    from sensorium.eval.plots import hit_grid, loss_curve
    from sensorium.train.align import AlignConfig, run_alignment

    start = time.time()
    run_dir, data = Path(run_dir), Path(data)
    timings: dict[str, float] = {}
    built = json.loads((data / "report.json").read_text()) if (data / "report.json").exists() else {}
    if built.get("builder_version") != BUILDER_VERSION or (limit is not None and built.get("config", {}).get("limit") != limit):
        print(f"[1/5] building openclipart shards into {data}")
        build(ClipartConfig(out=str(data), limit=limit), progress=progress)
    else:
        print(f"[1/5] using the openclipart shards in {data} ({built['written']} samples)")
    timings["data_s"] = round(time.time() - start, 1)
    config = load_config(AlignConfig, config_path, [f"data={data}", *(overrides or [])])
    print("[2/5] caching tower features and aligning (image-text, then speech)")
    t0 = time.time()
    run_alignment(config, run_dir, progress=progress)
    timings["align_s"] = round(time.time() - t0, 1)
    print("[3/5] evaluating on the test split")
    t0 = time.time()
    report = evaluate(run_dir, data / "test", progress=progress)
    classify_dir = build_classify_folder(data / "test", run_dir / "classify")
    if classify_dir is not None:
        report["classification"] = zero_shot(run_dir, classify_dir)["classification"]
    timings["eval_s"] = round(time.time() - t0, 1)
    print("[4/5] drawing the loss curve and retrieval grids")
    pictures = {"loss_curve": str(loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png"))}
    for query in [m for m in ("text", "audio") if m in report.get("towers", {})]:
        rows = retrieval_examples(run_dir, data / "test", query)
        pictures[f"{query}->image grid"] = str(hit_grid(rows, run_dir / f"retrieval_{query}_to_image.png",
                                                        title=f"test split: {query} -> image, top 5"))
    timings["total_s"] = round(time.time() - start, 1)
    report.update({"timings": timings, "pictures": pictures, "machine": machine()})
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    print("[5/5] report:", run_dir / "report.json")
    print(format_table(report))
    c = report.get("classification")
    if c:
        print(f"zero-shot categories ({c['classes']} classes, n={c['n']}): top-1 {c['top1']:.1f}%, top-5 {c['top5']:.1f}% "
              f"(chance {c['chance_top1']:.1f}% / {c['chance_top5']:.1f}%)")
    print(f"total {timings['total_s']:.0f}s")
    index_quickstart(run_dir, data / "test", progress)
    return report


def index_quickstart(run_dir: Path, test_dir: Path, progress: bool = True) -> Path:
    """An index of the test split's images and captions (kept while the run and data are unchanged), so `sensorium
    search` and `sensorium serve` work right after the quick start."""
    from sensorium.index import ensure

    t0 = time.time()
    index, rebuilt = ensure(run_dir, run_dir / "index", [test_dir], modalities=["image", "text"], progress=progress)
    print(f"index: {index.count} items in {index.root} ({'built' if rebuilt else 'up to date'}, {time.time() - t0:.0f}s)"
          f"\n  sensorium search {index.root} \"a red apple\"\n  sensorium serve {index.root}   # then open "
          "http://127.0.0.1:8000/")
    return index.root


def machine() -> dict[str, Any]:
    """Where a result was measured."""
    import os
    import platform

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _quickstart(args: argparse.Namespace) -> int:
    run_quickstart(args.run, args.data, args.config, args.overrides, args.limit, progress=not args.quiet)
    return 0


def register(commands) -> None:
    p = commands.add("quickstart", _quickstart, "the main job: build the openclipart data, cache tower features, "
                     "align image, text and speech, evaluate against baselines, write a report with pictures",
                     overrides=True, example="stages.0.train.steps=200 towers.audio=logmel-stats")
    p.add_argument("--run", default="runs/quickstart", help="run directory (default runs/quickstart)")
    p.add_argument("--data", default="data/clipart", help="data folder (default data/clipart)")
    p.add_argument("--config", default=None, help="YAML recipe (default: the built-in one = configs/quickstart.yaml)")
    p.add_argument("--limit", type=int, default=None, help="build only N items (a smoke run)")
