"""Device names checked at the door: `cuda` on a machine without a GPU, a GPU index that does not exist or a
misspelt name is a ValueError saying what is available, instead of a failure deep inside torch."""

from __future__ import annotations

import torch


def check_device(name: str | torch.device, what: str = "device") -> torch.device:
    """`name` as a torch.device that exists here, or a ValueError naming `what`, the value and the fix."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{what}={name!r} is not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what}={name!r} but no CUDA GPU is available here; use {what}=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{what}={name!r} but this machine has {torch.cuda.device_count()} GPU(s) "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{what}={name!r} but MPS is not available here; use {what}=cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{what}={name!r}: Sensorium runs on cpu, cuda or mps")
    return device
