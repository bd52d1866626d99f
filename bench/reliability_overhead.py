"""What the reliability checks cost: saving a checkpoint with its manifest (sizes + SHA-256) against a bare
safetensors write, loading with verification against without, the feature cache's content key (SHA-256 of the
shard bytes) and a tower's weights hash. Writes bench/results/reliability_overhead.json.

Usage: PYTHONPATH=src python3 bench/reliability_overhead.py [--mb 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import save  # noqa: E402

from sensorium.core.files import file_digest, load_state, save_state  # noqa: E402
from sensorium.data.features import weights_digest  # noqa: E402


def best(fn, repeat: int) -> float:
    """The fastest of `repeat` runs, in seconds (the cores may be shared: the minimum is the least disturbed)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="checkpoint size in MB (float32 tensors)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    n = args.mb * 2**20 // 4
    state = {"model": {f"layer{i}.weight": torch.randn(n // 8) for i in range(8)}, "step": 1}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bare = best(lambda: save_file(state["model"], str(root / "bare.safetensors")), args.repeat)
        checked = best(lambda: save_state(root / "ckpt", state), args.repeat)
        load_bare = best(lambda: load_file(str(root / "bare.safetensors")), args.repeat)
        load_plain = best(lambda: load_state(root / "ckpt", verify=False), args.repeat)
        load_verified = best(lambda: load_state(root / "ckpt"), args.repeat)
        digest = best(lambda: file_digest(root / "bare.safetensors"), args.repeat)
        size = os.path.getsize(root / "bare.safetensors") / 2**20
    tower = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(20)])  # 21M parameters, 84 MB
    tower_mb = sum(p.numel() for p in tower.parameters()) * 4 / 2**20

    def weights() -> str:
        tower.__dict__.pop("_sensorium_weights_digest", None)
        return weights_digest(tower)

    weights_s = best(weights, args.repeat)
    results = {
        "checkpoint_mb": round(size, 1),
        "save_bare_s": round(bare, 3), "save_with_manifest_s": round(checked, 3),
        "load_bare_s": round(load_bare, 3), "load_unverified_s": round(load_plain, 3),
        "load_verified_s": round(load_verified, 3),
        "sha256_mb_per_s": round(size / digest, 1),
        "tower_weights_mb": round(tower_mb, 1), "tower_weights_hash_s": round(weights_s, 3),
    }
    results["summary"] = (f"{size:.0f} MB checkpoint: save {bare:.2f}s bare -> {checked:.2f}s with manifest, load "
                          f"{load_plain:.2f}s -> {load_verified:.2f}s verified; SHA-256 {size / digest:.0f} MB/s; "
                          f"a {tower_mb:.0f} MB tower's weights hash {weights_s:.2f}s (once per tower object)")
    path = save("reliability_overhead", results)
    print(results["summary"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
