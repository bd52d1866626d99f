"""A small dataset held in memory for CPU training: every sample decoded once, tensor modalities converted once
(floating ones stored as float16 to halve memory, e.g. waveforms), and mini-batches in the batch convention
(`loader.collate`) drawn by seeded epoch permutations, so batch `step` is a pure function of (seed, step)."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, Iterator

import torch

from sensorium import modalities
from sensorium.core.progress import progress_bar
from sensorium.data.batches import seeded_rows
from sensorium.data.formats import iter_source, open_source
from sensorium.data.loader import collate
from sensorium.data.shards import SkipLog


class MemorySet:
    """Decoded samples of a source; `group_fn(sample)` names interchangeable samples (same content)."""

    def __init__(self, source: Any, want: Iterable[str], group_fn: Callable[[dict[str, Any]], Hashable] | None = None,
                 strict: bool = False, progress: bool = True):
        self.want = list(want)
        self.skips = SkipLog(strict=strict)
        self.samples: list[dict[str, Any]] = []
        for sample in progress_bar(iter_source(open_source(source), self.skips, self.want), desc="loading", unit="sample",
                           disable=not progress):
            self.samples.append({k: self._compact(k, v) for k, v in sample.items()})
        if not self.samples:
            raise ValueError(f"{source}: no samples with any of {self.want}")
        keys: dict[Hashable, int] = {}
        self.groups = torch.tensor([keys.setdefault(group_fn(s) if group_fn else i, len(keys))
                                    for i, s in enumerate(self.samples)])

    @staticmethod
    def _compact(name: str, value: Any) -> Any:
        if name not in modalities.names() or modalities.get(name).to_tensor is None:
            return value
        tensor = modalities.get(name).to_tensor(value)
        return tensor.half() if tensor.is_floating_point() else tensor

    def __len__(self) -> int:
        return len(self.samples)

    @torch.no_grad()
    def map(self, name: str, fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
            progress: bool = False) -> None:
        """Replace each sample's `name` tensor by `fn(tensor[None], length[None])[0]` trimmed to the new length:
        a fixed front end (e.g. a tokenizer's `prepare`) computed once instead of at every step."""
        for sample in progress_bar(self.samples, desc=f"preparing {name}", unit="sample", disable=not progress):
            value = sample.get(name)
            if isinstance(value, torch.Tensor):
                out, length = fn(value.float()[None], torch.tensor([value.shape[0]]))
                out = out[0, : int(length[0])]
                sample[name] = out.half() if out.is_floating_point() else out

    def batch(self, rows: torch.Tensor | Iterable[int]) -> dict[str, Any]:
        """The batch of these rows: collated, float tensors back in float32, `groups` attached."""
        rows = torch.as_tensor(list(rows) if not isinstance(rows, torch.Tensor) else rows, dtype=torch.long)
        batch = collate([self.samples[i] for i in rows.tolist()], self.want)
        for name in self.want:
            if isinstance(batch.get(name), torch.Tensor) and batch[name].is_floating_point():
                batch[name] = batch[name].float()
        batch["groups"] = self.groups[rows]
        return batch

    def batches(self, batch_size: int, seed: int = 0) -> Callable[[int], Iterator[dict[str, Any]]]:
        """`batches(step)` for `Trainer.fit`: seeded shuffled mini-batches from step `step` on."""
        size = min(batch_size, len(self))

        def iterate(start: int) -> Iterator[dict[str, Any]]:
            step = start
            while True:
                yield self.batch(seeded_rows(len(self), size, seed, step))
                step += 1
        return iterate

    def in_order(self, batch_size: int) -> Iterator[dict[str, Any]]:
        """Every sample once, in order (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(start + batch_size, len(self))))
