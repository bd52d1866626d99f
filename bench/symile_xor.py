"""Symile's binary XOR result: zero-shot accuracy of retrieving b from (a, c) against p_hat, pairwise CLIP vs Symile,
written with the machine it ran on to bench/results/symile_xor.json (and a plot next to it).

Usage: PYTHONPATH=src python3 bench/symile_xor.py [--config configs/symile-xor.yaml] [--threads 1] [overrides...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import RESULTS, save  # noqa: E402

from sensorium.core.config import load_config, to_dict  # noqa: E402
from sensorium.train.xor import XorConfig, plot_xor, run_xor  # noqa: E402


def main() -> None:
    """Run the sweep of the recipe and save the table, every run and the settings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "symile-xor.yaml"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the cores are shared)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(XorConfig, args.config, args.overrides)
    start = time.time()
    with tempfile.TemporaryDirectory() as run:
        result = run_xor(config, run)
    path = save("symile_xor", {"config": to_dict(config), "seconds": round(time.time() - start, 1), **result})
    plot_xor(result["table"], config.losses, RESULTS / "symile_xor.png")
    print(f"wrote {path}")
    for row in result["table"]:
        print(row)


if __name__ == "__main__":
    main()
