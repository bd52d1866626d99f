"""Endless batches for training by steps, in an order fixed by the seed and the number of consumers, so that a run
stopped at any step resumes on exactly the batch it would have seen next.

Each consumer (DDP rank x DataLoader worker) reads its own share of the units pass after pass without end (pass
e: units shuffled by (seed, e) and dealt round-robin; with fewer units than consumers each reads all of them and
keeps every k-th sample) and yields whole batches. No worker ever runs dry, so a DataLoader hands out batch b from
worker b mod W, always; DataLoader's order at the end of an epoch, where workers run out at different times, is
not deterministic, which is why the stream has no epochs. Each batch carries its consumer's position after it
(`__state__`: pass, unit slot, raw position): a few integers per worker are the whole resume state, and a
resumed stream skips raw items without decoding them. `rotate` makes the resumed DataLoader's worker 0 play the
consumer whose batch comes next."""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from sensorium.data.formats import Source, open_source
from sensorium.data.loader import collate
from sensorium.data.shards import SkipLog


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EndlessBatches(IterableDataset):
    """Collated batches of `batch_size` samples that hold every modality in `want`, forever (use with
    `DataLoader(batch_size=None)`). `transform(batch) -> batch` runs on each batch where it is made (in the
    worker). `workers`: the DataLoader's worker count (0 = iterated in this process). A sample lacking a wanted
    modality is skipped and counted (`strict`: an error)."""

    def __init__(self, source: Any, batch_size: int, want: Iterable[str], seed: int = 0, workers: int = 0,
                 strict: bool = False, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        super().__init__()
        self.source: Source = source if hasattr(source, "units") and hasattr(source, "decode") else open_source(source)
        if not self.source.units():
            raise ValueError(f"{source}: no shards found")
        self.batch_size, self.want, self.seed = batch_size, sorted(want), seed
        self.roles = max(1, workers)
        self.strict, self.transform = strict, transform
        self.state: dict[int, dict[str, int]] = {}  # consumer role -> {"pass", "slot", "pos"}: where it resumes
        self.rotate = 0  # new worker i plays role (i + rotate) % roles

    def load_state(self, states: dict[int, dict[str, int]], batches: int) -> None:
        """Resume: each role's position after the last batch consumed, and how many batches were consumed."""
        self.state = {int(role): dict(s) for role, s in states.items()}
        self.rotate = batches % self.roles

    def _units(self, consumer: int, consumers: int, epoch: int) -> tuple[list[int], bool]:
        order = list(range(len(self.source.units())))
        np.random.default_rng([self.seed, epoch]).shuffle(order)
        striding = len(order) < consumers
        return (order if striding else order[consumer::consumers]), striding

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        if workers != self.roles:
            raise ValueError(f"EndlessBatches was made for {self.roles} worker(s), iterated by {workers}")
        role = (wid + self.rotate) % workers
        rank, world = rank_world()
        consumer, consumers = rank * workers + role, world * workers
        start = self.state.get(role, {"pass": 0, "slot": 0, "pos": 0})
        epoch, first_slot, first_pos = start["pass"], start["slot"], start["pos"]
        skips, names, want = SkipLog(strict=self.strict), self.source.units(), set(self.want)
        samples: list[dict[str, Any]] = []
        reported = Counter()
        while True:
            mine, striding = self._units(consumer, consumers, epoch)
            whole, found = first_slot == 0 and first_pos == 0, 0
            for slot in range(first_slot, len(mine)):
                for pos, item in enumerate(self.source.raw(mine[slot], skips)):
                    if (slot == first_slot and pos < first_pos) or (striding and pos % consumers != consumer):
                        continue
                    sample = self.source.decode(item, skips, want)
                    if sample is not None and not want <= sample.keys():
                        missing = sorted(want - sample.keys())
                        skips.skip("missing_modality", f"{names[mine[slot]]}:{pos}", f"no {', '.join(missing)}")
                        sample = None
                    if sample is None:
                        continue
                    found += 1
                    samples.append(sample)
                    if len(samples) == self.batch_size:
                        batch = collate(samples, self.want)
                        batch["__role__"] = role
                        batch["__state__"] = {"pass": epoch, "slot": slot, "pos": pos + 1}
                        batch["__skips__"] = dict(skips.counts - reported)
                        reported = Counter(skips.counts)
                        batch.pop("__done__", None)
                        yield self.transform(batch) if self.transform is not None else batch
                        samples = []
            if whole and found < self.batch_size:
                where = f"consumer {consumer} of {consumers} (rank x worker)" if consumers > 1 else "the data"
                raise ValueError(f"{where}: a pass over {len(mine)} shard(s) gave {found} samples with "
                                 f"{' and '.join(self.want)}, fewer than one batch of {self.batch_size}: no complete "
                                 f"batch; use more shards or samples, a smaller batch, or fewer workers/ranks")
            epoch, first_slot, first_pos = epoch + 1, 0, 0
