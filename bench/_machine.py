"""What every bench JSON records about where it ran, so numbers are never compared across machines blindly."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


OPTIONAL = ("torchao", "flash-attn-4", "nvidia-cutlass-dsl", "open_clip_torch", "triton")


def optional_packages() -> dict[str, str | None]:
    """Versions of the optional packages that change which kernels run (None where not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in OPTIONAL:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    """Platform, CPU model and count, Python/torch/numpy/Pillow versions, optional kernel packages, and the
    git commit measured."""
    import numpy
    import PIL
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__, "torch_threads": torch.get_num_threads(), "commit": commit,
            "optional_packages": optional_packages(),
            # the cores may be shared: a load average near the core count means other work competed with the bench
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def save(name: str, results: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json with the machine block first."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=1) + "\n")
    return path
