"""CUDA out-of-memory in a training step, re-raised with the options that lower memory (`memory_advice`)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

MEMORY_OPTIONS = (
    "a smaller batch per GPU (--batch-size)",
    "gradient accumulation (--accum N, FastConfig.accum): the same samples per optimizer step in N micro-batches, "
    "about N times less activation memory (each contrastive loss then sees batch/N negatives)",
    "activation checkpointing (--checkpoint, FastConfig.checkpoint): blocks are recomputed in backward "
    "(about a third more compute)",
    "local loss (--local-loss, FastConfig.local_loss; several GPUs): each rank scores its own rows against the "
    "global batch, B_local x B_global logits instead of B_global x B_global",
    "FSDP2 (--strategy fsdp; several GPUs): parameters, gradients and optimizer state are sharded",
    "float8 matmuls (FastConfig.fp8='tensorwise'; torchao, an H100-class GPU): about a third less peak memory "
    "at ViT-B/L sizes, but 10-20% slower there",
)


class OutOfMemoryAdvice(torch.OutOfMemoryError):
    """CUDA out of memory, with the options that lower memory in the message."""


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


@contextmanager
def memory_advice(context: str) -> Iterator[None]:
    """Re-raise CUDA out-of-memory inside the block as OutOfMemoryAdvice naming what lowers memory."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        if isinstance(err, OutOfMemoryAdvice):
            raise
        where = ""
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            where = f" (peak {_gib(torch.cuda.max_memory_allocated())} allocated by PyTorch; " \
                    f"{_gib(free)} free of {_gib(total)} on {torch.cuda.get_device_name()})"
        options = "\n".join(f"  - {o}" for o in MEMORY_OPTIONS)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OutOfMemoryAdvice(f"out of GPU memory during {context}{where}. Options that lower memory:\n"
                                f"{options}\nOriginal error: {first}") from err
