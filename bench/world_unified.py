"""Shared trunk vs separate towers vs modality experts (and optionally MoE): tri-modal unified encoders trained
from scratch on Sensorium World with the same recipe, compared on retrieval for every pair of modalities and on
zero-shot shape/colour classification from text prompts. Writes bench/results/world_unified.json (machine named)
and prints the markdown table that docs/unified.md shows.

Usage: PYTHONPATH=src python3 bench/world_unified.py [--variants shared,separate,experts,moe] [--seeds 0,1]
       [--threads 1] [overrides]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import save  # noqa: E402

from sensorium.core.config import load_config, to_dict  # noqa: E402
from sensorium.train.unified import UnifiedRecipe, run_unified  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "shared": ("shared trunk", ["model.arrangement=shared", "model.ffn=dense"]),
    "separate": ("separate towers", ["model.arrangement=separate", "model.ffn=dense"]),
    "experts": ("shared trunk + modality experts", ["model.arrangement=shared", "model.ffn=experts"]),
    "moe": ("shared trunk + MoE (4 experts, top-2)", ["model.arrangement=shared", "model.ffn=moe"]),
}
PAIRS = ["image->text", "text->image", "image->audio", "audio->image", "text->audio", "audio->text"]


def mean_summary(per_seed: list[dict]) -> dict:
    """Numeric fields averaged over seeds (the table's cells); the per-seed values stay in the JSON."""
    keys = [k for k, v in per_seed[0].items() if isinstance(v, (int, float))]
    return {k: round(sum(s[k] for s in per_seed) / len(per_seed), 2) for k in keys}


def table(rows: dict[str, dict], seeds: int) -> str:
    """Markdown: one row per variant (R@1 per direction, zero-shot accuracy; means over seeds), chance last."""
    head = ["variant", "params", "train s", *[p.replace("->", "→") + " R@1" for p in PAIRS],
            "zero-shot shape (centroid / nearest prompt)", "zero-shot colour (centroid / nearest prompt)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in rows.items():
        zero = [f"{s[f'zero-shot {a}']:.1f} / {s[f'zero-shot {a} nearest prompt']:.1f}" for a in ("shape", "color")]
        cells = [VARIANTS[name][0], f"{s['params'] / 1e6:.2f} M", f"{s['train_seconds']:.0f}",
                 *[f"{s[f'{p} R@1']:.1f}" for p in PAIRS], *zero]
        lines.append("| " + " | ".join(cells) + " |")
    any_row = next(iter(rows.values()))
    chance = ["chance", "", "", *[f"{any_row[f'chance {p} R@1']:.1f}" for p in PAIRS],
              f"{any_row['zero-shot shape chance']:.1f}", f"{any_row['zero-shot color chance']:.1f}"]
    lines.append("| " + " | ".join(chance) + " |")
    return "\n".join(lines) + f"\n\n(means over {seeds} seed{'s' if seeds > 1 else ''})"


def main() -> None:
    """Train and evaluate each variant and seed (resuming finished or interrupted runs), then save the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "world-unified.yaml"))
    parser.add_argument("--variants", default="shared,separate,experts")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (model init, batch order)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "world-unified"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed, reports, recipes, summaries = {}, {}, {}, {}
    start = time.time()
    for name in args.variants.split(","):
        per_seed[name], reports[name] = [], {}
        for seed in seeds:
            recipe = load_config(UnifiedRecipe, args.config, [*VARIANTS[name][1], *args.overrides, f"seed={seed}"])
            report = run_unified(recipe, Path(args.runs) / f"{name}-s{seed}")
            per_seed[name].append({"seed": seed, **report["summary"]})
            reports[name][seed], recipes[name] = report, to_dict(recipe)
            print(f"{name} seed {seed}: {report['summary']}", flush=True)
        summaries[name] = mean_summary(per_seed[name])
    markdown = table(summaries, len(seeds))
    path = save("world_unified", {"seconds": round(time.time() - start, 1), "seeds": seeds, "table_markdown": markdown,
                                  "summary": summaries, "per_seed": per_seed, "recipes": recipes, "reports": reports})
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
