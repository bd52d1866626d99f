"""How precisely must a VQA model know where objects are to answer World's relational questions?

For the 'closest' and 'furthest' questions of World val scenes, answer them from the scene graph with every object
centre snapped to the centre of its cell on a g x g grid (the best a model can do if it knows positions only to the
cell of one image token), for several g. Writes bench/results/world_position_oracle.json.

Usage:  PYTHONPATH=src python3 bench/world_position_oracle.py [--scenes 1500]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def snapped_answer(question: dict, objects: list[dict], grid: int | None) -> str:
    """The answer with object centres snapped to a grid x grid cell centre (None: exact positions); ties go to
    the lower object id, as in the scene graph's own ranking."""
    snap = (lambda v: v) if grid is None else (lambda v: (np.floor(v * grid) + 0.5) / grid)
    ref = next(o for o in objects if o["id"] == question["object"])
    others = [o for o in objects if o["id"] != ref["id"]]
    dist = [float(np.hypot(snap(o["x"]) - snap(ref["x"]), snap(o["y"]) - snap(ref["y"]))) for o in others]
    order = sorted(range(len(others)), key=lambda i: (dist[i], others[i]["id"]))
    pick = others[order[0] if question["type"] == "closest" else order[-1]]
    return pick["shape"] if question["question"].startswith("What is the shape") else pick["color"]


def answer_margin(question: dict, objects: list[dict]) -> float:
    """Distance gap between the answer object and the runner-up, as a fraction of the image side (1.0 when there
    is no runner-up: the reference has only one other object)."""
    ref = next(o for o in objects if o["id"] == question["object"])
    dist = sorted(float(np.hypot(o["x"] - ref["x"], o["y"] - ref["y"])) for o in objects if o["id"] != ref["id"])
    if len(dist) < 2:
        return 1.0
    return dist[1] - dist[0] if question["type"] == "closest" else dist[-1] - dist[-2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "world_position_oracle.json")
    args = parser.parse_args()
    from _machine import machine

    from sensorium.data.world import WorldConfig, make_sample

    start = time.time()
    config = WorldConfig(image_size=64)
    grids: list[int | None] = [None, 4, 8, 16, 32]
    right = {str(g): 0 for g in grids}
    margins = []  # how much nearer (further) the answer is than the runner-up, as a fraction of the image side
    total = 0
    for index in range(args.scenes):
        sample = make_sample(index, "val", 0, config, ("image", "text", "qa"))
        objects = sample["json"]["objects"]
        for question in sample["qa"]:
            if question["type"] not in ("closest", "furthest"):
                continue
            total += 1
            margins.append(answer_margin(question, objects))
            for g in grids:
                right[str(g)] += snapped_answer(question, objects, g) == question["answer"]
    accuracy = {("exact" if g == "None" else f"{g}x{g}"): round(100 * n / total, 2) for g, n in right.items()}
    report = {"machine": machine(), "command": "PYTHONPATH=src python3 bench/world_position_oracle.py",
              "scenes": args.scenes, "questions": total, "world": {"image_size": 64, "split": "val", "seed": 0},
              "closest_furthest_accuracy_with_positions_snapped_to_grid": accuracy,
              "answer_margin_quantiles": {str(q): round(float(np.quantile(margins, q)), 4)
                                          for q in (0.05, 0.1, 0.25, 0.5)},
              "seconds": round(time.time() - start, 1)}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(accuracy))
    return 0 if accuracy["exact"] == 100.0 else 1


if __name__ == "__main__":
    sys.exit(main())
