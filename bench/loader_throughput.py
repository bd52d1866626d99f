"""Loader speed: samples/s from World shards with decoding (registry decoders) and collation into the batch
convention, iterated directly and through StreamingLoader with 0, 1 and 2 workers.

    PYTHONPATH=src python3 bench/loader_throughput.py [--n 2000]   ->  bench/results/loader_throughput.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

from _machine import save

from sensorium.data.loader import StreamingDataset, StreamingLoader
from sensorium.data.world import WorldConfig, write_world

MODALITIES = ("image", "text", "qa", "depth", "segmentation")


def timed(make, count, repeats: int = 2) -> tuple[int, float]:
    """(samples, best seconds of `repeats`) to exhaust a fresh iterable of samples or batches."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        total = sum(count(item) for item in make())
        best = min(best, time.perf_counter() - start)
    return total, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        write_world(tmp, args.n, "train", 0, WorldConfig(), MODALITIES, shard_size=-(-args.n // args.shards),
                    workers=2, progress=False)
        total, seconds = timed(lambda: StreamingDataset(tmp), lambda sample: 1)
        runs.append({"mode": "dataset, no collate", "workers": 0, "samples": total,
                     "samples_per_s": round(total / seconds, 1)})
        for workers in (0, 1, 2):
            total, seconds = timed(lambda: StreamingLoader(StreamingDataset(tmp), batch_size=args.batch_size,
                                                           num_workers=workers), lambda batch: len(batch["__key__"]))
            runs.append({"mode": "StreamingLoader + collate", "workers": workers, "samples": total,
                         "samples_per_s": round(total / seconds, 1)})
    for r in runs:
        print(f"{r['mode']:<28} workers={r['workers']}  {r['samples_per_s']:>8.1f} samples/s")
    print(save("loader_throughput", {"modalities": list(MODALITIES), "n": args.n, "shards": args.shards,
                                     "batch_size": args.batch_size, "image_size": 64, "runs": runs}))


if __name__ == "__main__":
    main()
