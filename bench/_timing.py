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


def kernel_ms(fn: Callable[[], Any], reps: int) -> tuple[float, dict[str, float]]:
    """GPU kernel time per call (ms) under torch.profiler, without the host's launch time, and per kernel."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    kernels = {e.key[:100]: e.self_device_time_total / reps / 1000 for e in prof.key_averages()
               if e.self_device_time_total > 0}
    return sum(kernels.values()), kernels
