"""Throughput of the packaged towers on this machine (forward only, preprocessing excluded), as JSON.

Usage: PYTHONPATH=src python3 bench/towers.py [--batch 32] [--repeats 3] [--threads N] [--out bench/towers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from sensorium.encoders import build_tower


def throughput(name: str, values: list[Any], repeats: int) -> float:
    """Items per second of the tower's forward pass on one prepared batch, after one warm-up call."""
    tower = build_tower(name).eval()
    inputs = tower.prepare(values)
    with torch.inference_mode():
        tower(inputs)
        start = time.perf_counter()
        for _ in range(repeats):
            tower(inputs)
        return len(values) * repeats / (time.perf_counter() - start)


def main() -> None:
    """Measure both packaged towers and write the numbers with the machine they were taken on."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("bench/towers.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from PIL import Image

    images = [Image.effect_noise((256, 256), 64 + i).convert("RGB") for i in range(args.batch)]
    texts = [f"a photo of object number {i} on a wooden table" for i in range(args.batch)]
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "load_average": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__},
        "batch": args.batch,
        "efficientnet-lite0_images_per_s": round(throughput("efficientnet-lite0", images, args.repeats), 1),
        "minilm-l6_texts_per_s": round(throughput("minilm-l6", texts, args.repeats), 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
