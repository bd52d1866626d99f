"""Streaming loading for any `Source`: an IterableDataset that splits units across DDP ranks and DataLoader
workers (or strides samples when there are fewer units than consumers, so no worker idles and none hangs), is
resumable mid-epoch, and a collate that builds the DESIGN.md batch: tensors keyed by modality plus
`present[name]` masks. Skips made in worker processes travel with the samples, so the main process counts them."""

from __future__ import annotations

import functools
import logging
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sensorium import modalities
from sensorium.data.formats import Source, open_source
from sensorium.data.shards import SkipLog

log = logging.getLogger(__name__)


class Progress:
    """Which (unit, position) pairs are done this epoch: a per-unit prefix counter plus the few positions done
    beyond it (workers and prefetching make the frontier ragged). Exact whatever the worker count."""

    def __init__(self) -> None:
        self.next: dict[str, int] = {}
        self.extra: dict[str, set[int]] = {}
        self.samples_consumed = 0

    def done(self, unit: str, pos: int) -> bool:
        return pos < self.next.get(unit, 0) or pos in self.extra.get(unit, ())

    def mark(self, unit: str, pos: int, consumed: bool = True) -> None:
        """Record a position as done (`consumed` counts it as a delivered sample, else it was a skip)."""
        if self.done(unit, pos):
            return
        self.samples_consumed += int(consumed)
        extra = self.extra.setdefault(unit, set())
        extra.add(pos)
        n = self.next.get(unit, 0)
        while n in extra:
            extra.discard(n)
            n += 1
        self.next[unit] = n

    def state_dict(self) -> dict[str, Any]:
        return {"samples_consumed": self.samples_consumed,
                "units": {u: {"next": self.next.get(u, 0), "extra": sorted(self.extra.get(u, ()))}
                          for u in sorted(set(self.next) | set(self.extra))}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Progress":
        progress = cls()
        progress.samples_consumed = int(state.get("samples_consumed", 0))
        for unit, entry in state.get("units", {}).items():
            progress.next[unit] = int(entry["next"])
            progress.extra[unit] = set(int(p) for p in entry["extra"])
        return progress


class _PendingSkips(SkipLog):
    """A SkipLog that also remembers skips until they can ride along with the next sample to the main process."""

    def __init__(self, strict: bool):
        super().__init__(strict=strict)
        self.pending: list[tuple[str, str, str, int, str | None]] = []

    def skip(self, reason: str, where: str, detail: str = "", samples: int = 1, uncounted: str | None = None) -> None:
        super().skip(reason, where, detail, samples, uncounted)
        self.pending.append((reason, f"{where}: {detail or reason}", where, samples, uncounted))


class _Quiet(SkipLog):
    """For consumers that read a unit only to stride through it: the unit's owner (consumer 0) reports its
    raw-level problems, so they are counted once, but strict still stops everyone."""

    def skip(self, reason: str, where: str, detail: str = "", samples: int = 1, uncounted: str | None = None) -> None:
        if self.strict:
            super().skip(reason, where, detail, samples, uncounted)


def _consumer() -> tuple[int, int]:
    """(this consumer's index, number of consumers) over DDP ranks x DataLoader workers."""
    worker = get_worker_info()
    wid, workers = (worker.id, worker.num_workers) if worker else (0, 1)
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return rank * workers + wid, world * workers


class StreamingDataset(IterableDataset):
    """Decoded samples of a source (or anything `open_source` accepts), each tagged with `__unit__`/`__pos__`.

    Units go round-robin to consumers (ranks x workers); with fewer units than consumers every consumer reads
    all units and keeps every k-th sample. `state_dict()` holds the epoch and what was consumed; after
    `load_state_dict` iteration skips consumed samples without decoding them. Iterated directly (no workers),
    the dataset tracks its own progress and skips; under `StreamingLoader` the loader does."""

    def __init__(self, source: Any, *, want: Iterable[str] | None = None, strict: bool = False, shuffle: bool = False,
                 shuffle_buffer: int = 0, seed: int = 0, **source_options: Any):
        super().__init__()
        self.source: Source = source if hasattr(source, "units") and hasattr(source, "decode") \
            else open_source(source, **source_options)
        self.want = set(want) if want is not None else None
        self.strict, self.shuffle, self.shuffle_buffer, self.seed = strict, shuffle, shuffle_buffer, seed
        self.epoch = 0
        self.progress = Progress()
        self.skips = SkipLog(strict=strict)
        self.managed = False  # set by StreamingLoader: it tracks progress from batches instead

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """`{"epoch", "samples_consumed", "units": {unit: {"next", "extra"}}}`: JSON-ready, exact across workers."""
        return {"epoch": self.epoch, **self.progress.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state.get("epoch", 0))
        self.progress = Progress.from_state(state)

    def end_epoch(self) -> None:
        self.epoch += 1
        self.progress = Progress()

    def _order(self) -> list[int]:
        order = list(range(len(self.source.units())))
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        return order

    def _stream(self) -> Iterator[dict[str, Any]]:
        consumer, consumers = _consumer()
        names = self.source.units()
        order = self._order()
        striding = len(order) < consumers
        mine = order if striding else order[consumer::consumers]
        skips = _PendingSkips(self.strict)
        raw_skips = _Quiet(self.strict) if striding and consumer != 0 else skips
        done_skips: list[tuple[str, int]] = []
        for unit in mine:
            name = names[unit]
            for pos, item in enumerate(self.source.raw(unit, raw_skips)):
                if (striding and pos % consumers != consumer) or self.progress.done(name, pos):
                    continue
                sample = self.source.decode(item, skips, self.want)
                if sample is not None and not any(key in modalities.names() for key in sample):
                    skips.skip("no_modality", f"{name}:{pos}", "no member of a known modality")
                    sample = None
                if sample is None:
                    done_skips.append((name, pos))
                    continue
                sample.update(__unit__=name, __pos__=pos, __skips__=skips.pending, __done__=done_skips)
                skips.pending, done_skips = [], []
                yield sample
        if skips.pending or done_skips:  # trailing skips still have to reach the main process
            yield {"__marker__": True, "__skips__": skips.pending, "__done__": done_skips}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        in_main = get_worker_info() is None and not self.managed
        stream = self._stream()
        if self.shuffle_buffer > 1:
            stream = _shuffled(stream, self.shuffle_buffer, np.random.default_rng([self.seed, self.epoch, *_consumer()]))
        for sample in stream:
            if in_main:
                self._record(sample)
            if self.managed or not sample.get("__marker__"):  # markers only carry bookkeeping to the loader
                yield sample
        if in_main:
            self.end_epoch()

    def _record(self, sample: dict[str, Any]) -> None:
        for reason, message, where, samples, uncounted in sample.get("__skips__", ()):
            self.skips.merge(reason, message, where, samples, uncounted)
        for unit, pos in sample.get("__done__", ()):
            self.progress.mark(unit, pos, consumed=False)
        if "__unit__" in sample:
            self.progress.mark(sample["__unit__"], sample["__pos__"])


def _shuffled(stream: Iterator[dict[str, Any]], size: int, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    """A shuffle buffer: keep `size` samples, emit a random one as each new one arrives."""
    buffer: list[dict[str, Any]] = []
    for sample in stream:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        k = int(rng.integers(size))
        buffer[k], sample = sample, buffer[k]
        yield sample
    rng.shuffle(buffer)
    yield from buffer


def _stack(tensors: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack per-sample tensors into [B, ...]; a missing sample is zeros; ragged shapes are zero-padded to the
    largest and their first-dim lengths returned (0 for missing samples)."""
    real = [t for t in tensors if t is not None]
    if len(real) == len(tensors) and all(t.shape == real[0].shape for t in real):
        return torch.stack(real), None  # the common case, one copy (10x faster than zeros + slice assignment)
    shape = [max(t.shape[d] for t in real) for d in range(real[0].dim())]
    ragged = any(list(t.shape) != shape for t in real)
    out = torch.zeros([len(tensors), *shape], dtype=real[0].dtype)
    lengths = torch.zeros(len(tensors), dtype=torch.long)
    for i, t in enumerate(tensors):
        if t is not None:
            out[(i, *[slice(0, s) for s in t.shape])] = t
            lengths[i] = t.shape[0] if t.dim() else 1
    return out, lengths if ragged else None


def collate(samples: list[dict[str, Any]], want: Iterable[str] | None = None) -> dict[str, Any]:
    """The batch convention: `{name: Tensor[B, ...] | list, "present": {name: BoolTensor[B]}, "lengths": {name:
    LongTensor[B]} (ragged only), "label": LongTensor[B] (-1 = none), "json", "__key__", ...}`. Modalities with
    a `to_tensor` are stacked (zeros where absent; values that are already tensors are taken as they are); the rest
    stay lists (None where absent)."""
    markers = [s for s in samples if s.get("__marker__")]
    samples = [s for s in samples if not s.get("__marker__")]
    names = list(want) if want is not None else [n for n in modalities.names() if any(n in s for s in samples)]
    batch: dict[str, Any] = {"present": {}, "__key__": [s.get("__key__") for s in samples],
                             "__unit__": [s.get("__unit__") for s in samples], "__pos__": [s.get("__pos__") for s in samples],
                             "json": [s.get("json") for s in samples],
                             "__skips__": [x for s in samples + markers for x in s.get("__skips__", ())],
                             "__done__": [x for s in samples + markers for x in s.get("__done__", ())]}
    for name in names:
        present = [name in s for s in samples]
        batch["present"][name] = torch.tensor(present, dtype=torch.bool)
        to_tensor = modalities.get(name).to_tensor
        if to_tensor is None or not any(present):
            batch[name] = [s.get(name) for s in samples] if any(present) or to_tensor is None else None
            continue
        values = [s.get(name) for s in samples]  # values already turned into tensors (cached sets) pass as they are
        batch[name], lengths = _stack([None if v is None else v if isinstance(v, torch.Tensor) else to_tensor(v)
                                       for v in values])
        if lengths is not None:
            batch.setdefault("lengths", {})[name] = lengths
    if any("label" in s for s in samples):
        batch["label"] = torch.tensor([int(s.get("label", -1)) for s in samples], dtype=torch.long)
    return batch


class StreamingLoader:
    """A DataLoader over a StreamingDataset that yields collated batches and keeps the resume state and skip
    counts in the main process: `state_dict()` after any batch, `load_state_dict()` before iterating."""

    def __init__(self, dataset: StreamingDataset, batch_size: int = 32, num_workers: int = 0,
                 want: Iterable[str] | None = None, **dataloader_options: Any):
        if dataloader_options.get("persistent_workers"):
            raise ValueError("StreamingLoader needs fresh workers each epoch (they receive the resume state and "
                             "epoch when they start); drop persistent_workers")
        self.dataset = dataset
        dataset.managed = True
        self.skips = SkipLog(strict=dataset.strict)
        want = list(want) if want is not None else (sorted(dataset.want) if dataset.want is not None else None)
        self._loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                  collate_fn=functools.partial(collate, want=want), **dataloader_options)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self._loader:
            for reason, message, where, samples, uncounted in batch.pop("__skips__"):
                self.skips.merge(reason, message, where, samples, uncounted)
            for unit, pos in batch.pop("__done__"):
                self.dataset.progress.mark(unit, pos, consumed=False)
            for unit, pos in zip(batch["__unit__"], batch["__pos__"]):
                self.dataset.progress.mark(unit, pos)
            if batch["__key__"]:
                yield batch
        self.dataset.end_epoch()

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)

    @property
    def samples_consumed(self) -> int:
        return self.dataset.progress.samples_consumed
