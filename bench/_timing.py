"""GPU timing shared by the kernel benches."""

from __future__ import annotations

import statistics
from typing import Any, Callable

import torch


def cuda_median_ms(fn: Callable[[], Any], reps: int, warmup: int = 3) -> float:
    """Median milliseconds of `fn()` over `reps` calls, each between two CUDA events, after `warmup` calls. The
    time includes the host's launch work whenever the GPU waits for it."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
