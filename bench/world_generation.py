"""Sensorium World generation speed: samples/s written to shards (render, language, encode, tar) for the issue's
64 px image+text+qa set with 1 and 2 processes, for every modality but audio, and with espeak speech.

    PYTHONPATH=src python3 bench/world_generation.py [--n 1000]   ->  bench/results/world_generation.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _machine import save

from sensorium.data.world import PRODUCERS, WorldConfig, write_world


REPEATS = 2


def run(modalities: tuple[str, ...], n: int, workers: int, config: WorldConfig) -> dict:
    """Timed write_world into a temporary folder, best of REPEATS (the 2 cores may be shared with other work)."""
    times = []
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            summary = write_world(tmp, n, "train", 0, config, modalities, shard_size=1000, workers=workers,
                                  progress=False)
            times.append(time.perf_counter() - start)
            size = sum(p.stat().st_size for p in Path(tmp).glob("*.tar"))
    seconds = min(times)
    return {"modalities": list(summary["modalities"]), "n": n, "workers": workers, "image_size": config.image_size,
            "seconds": round(seconds, 3), "samples_per_s": round(n / seconds, 1),
            "all_runs_samples_per_s": [round(n / t, 1) for t in times], "bytes_per_sample": size // n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples for the image+text+qa runs")
    args = parser.parse_args()
    config = WorldConfig(image_size=64)
    no_audio = tuple(m for m in PRODUCERS if m != "audio")
    runs = [run(("image", "text", "qa"), args.n, 1, config), run(("image", "text", "qa"), args.n, 2, config),
            run(no_audio, args.n // 4, 1, config), run(no_audio, args.n // 4, 2, config),
            run(("image", "text", "qa", "audio"), max(8, args.n // 25), 2, config)]
    for r in runs:
        print(f"{'+'.join(r['modalities']):<60} workers={r['workers']}  {r['samples_per_s']:>8.1f} samples/s  "
              f"{r['bytes_per_sample'] / 1024:.1f} KiB/sample")
    print(save("world_generation", {"runs": runs}))


if __name__ == "__main__":
    main()
