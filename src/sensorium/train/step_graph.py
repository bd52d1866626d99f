"""The whole training step as one CUDA graph: eager warm-up steps, one capture, then copy-in and replay.

`StepGraph` wraps a step function `step(pixels, ids, zero_grad=True) -> loss` whose optimizer was created with
`capturable=True` (ContrastiveStep does both for `FastConfig.step_graph`)."""

from __future__ import annotations

from typing import Callable

import torch

GRAPH_WARMUP = 2  # eager steps (compilation, autotuning, optimizer state) before the step graph is captured


class StepGraph:
    """Runs `step(pixels, ids, zero_grad)` eagerly for GRAPH_WARMUP calls (on a side stream, as CUDA graph
    capture wants), then captures one call into a CUDA graph and from there on copies each batch into the
    graph's input buffers and replays it. The gradients stay in the graph's memory (written, not accumulated, by
    each replay); the returned loss is a copy, valid after later replays."""

    # thread_local: other threads' CUDA calls (a data feeder's copies, say) must not invalidate the capture, as
    # they did under torch.cuda.graph's default "global" mode (a step fed from shards failed at capture)
    capture_error_mode = "thread_local"

    def __init__(self, step: Callable[..., torch.Tensor]):
        self.step, self.calls = step, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.loss: torch.Tensor | None = None

    def __call__(self, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.graph is None and self.calls <= GRAPH_WARMUP:
            side = torch.cuda.Stream(pixels.device)
            side.wait_stream(torch.cuda.current_stream(pixels.device))
            with torch.cuda.stream(side):
                loss = self.step(pixels, ids)
            torch.cuda.current_stream(pixels.device).wait_stream(side)
            return loss
        if self.graph is None:
            self.inputs = (pixels.clone(), ids.clone())
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode=self.capture_error_mode):
                self.loss = self.step(*self.inputs, zero_grad=False)
            self.graph = graph
        static_pixels, static_ids = self.inputs
        if pixels.shape != static_pixels.shape or ids.shape != static_ids.shape:
            raise ValueError(f"step_graph=True replays a graph captured for pixels {tuple(static_pixels.shape)} "
                             f"and ids {tuple(static_ids.shape)}; got {tuple(pixels.shape)} and "
                             f"{tuple(ids.shape)} (drop the last partial batch, or use step_graph=False)")
        static_pixels.copy_(pixels, non_blocking=True)
        static_ids.copy_(ids, non_blocking=True)
        self.graph.replay()
        return self.loss.clone()
