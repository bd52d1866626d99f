"""The real-data path of the fast contrastive step: WebDataset shards (png|jpg + txt) decoded and tokenized by
DataLoader worker processes, copied and normalised on the GPU by a feeder thread on its own CUDA stream, a few
batches ahead of the step, in a resumable order (data/endless.py). Captions as byte tokens by default (a
tokenizer-free text input for throughput runs); `sensorium train clip` passes its trained tokenizer."""

from __future__ import annotations

import os
import queue
import threading
from collections import Counter
from contextlib import nullcontext
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from sensorium.data.endless import EndlessBatches, rank_world
from sensorium.interop.preprocess import OPENAI_MEAN, OPENAI_STD
from sensorium.models.dual_encoder import DualEncoderConfig


def byte_tokens(texts: list[str], context: int, vocab_size: int) -> torch.Tensor:
    """UTF-8 bytes as token ids 1..256 between start (vocab-2) and end (vocab-1, the highest id, so argmax
    pooling finds it) tokens, zero-padded or cut to `context`: a tokenizer-free text input for throughput runs."""
    if vocab_size < 259:
        raise ValueError(f"byte tokens need a vocabulary of at least 259 ids, the text tower has {vocab_size}")
    ids = np.zeros((len(texts), context), dtype=np.int64)
    ids[:, 0] = vocab_size - 2
    for i, text in enumerate(texts):  # numpy per row: a few times faster than Python lists (feeder-thread time)
        body = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)[: context - 2]
        ids[i, 1: len(body) + 1] = body.astype(np.int64) + 1
        ids[i, len(body) + 1] = vocab_size - 1
    return torch.from_numpy(ids)


def normalize_images(images: torch.Tensor, size: int, device: torch.device | str, mean: torch.Tensor | None = None,
                     std: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images [B, 3, H, W] -> float pixels on `device`, resized to `size` (bilinear, antialiased) if they
    are not that size, normalised with CLIP's mean/std: the training path's image preprocessing."""
    device = torch.device(device)
    mean = mean if mean is not None else torch.tensor(OPENAI_MEAN, device=device).view(1, 3, 1, 1)
    std = std if std is not None else torch.tensor(OPENAI_STD, device=device).view(1, 3, 1, 1)
    pixels = images.to(device, non_blocking=True).float().div_(255)
    if pixels.shape[-2:] != (size, size):
        pixels = nn.functional.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True)
    return (pixels - mean) / std


class ByteTokens:
    """`byte_tokens` as a picklable batch tokenizer (it runs in the DataLoader workers)."""

    def __init__(self, context: int, vocab_size: int):
        self.context, self.vocab_size = context, vocab_size

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return byte_tokens(texts, self.context, self.vocab_size)


class _Tokenize:
    """Batch transform run where the batch is made: captions -> `batch["ids"]`."""

    def __init__(self, tokenize: Callable[[list[str]], torch.Tensor]):
        self.tokenize = tokenize

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch["ids"] = self.tokenize(batch["text"])
        return batch


class ShardFeed:
    """Endless (pixels, ids) batches from WebDataset shards for a DualEncoder: images decoded to uint8 and captions
    tokenized (`tokenize(texts) -> ids [B, L]`, default `byte_tokens`) in `workers` DataLoader processes, copied to
    the device, resized if needed and normalised there (CLIP mean/std). With `thread` (the default) a background
    thread does the copies and the normalisation on its own CUDA stream, `depth` batches ahead, so the training
    thread only launches the step and the copies overlap its kernels. Pageable copies (`pin=False`, the default)
    beat pinned ones here: pinning costs the main process a copy per batch (ViT-B-16 on an H100: 69% of the
    synthetic rate kept against 53%, bench/results/train_throughput_h100_shards_feeder.json).

    The order of batches depends only on the shards, `seed`, `batch_size`, `workers` and the number of ranks
    (data/endless.py); `state_dict()` after any batch, passed back as `state`, resumes on the next batch exactly.
    Errors surface on the next `next`."""

    def __init__(self, shards: Any, cfg: DualEncoderConfig, batch_size: int, device: torch.device | str,
                 workers: int = 4, prefetch: int = 4, seed: int = 0, pin: bool = False, thread: bool = True,
                 depth: int = 3, tokenize: Callable[[list[str]], torch.Tensor] | None = None,
                 state: dict[str, Any] | None = None):
        self.cfg, self.device = cfg, torch.device(device)
        tokenize = tokenize or ByteTokens(cfg.text.context_length, cfg.text.vocab_size)
        self.dataset = EndlessBatches(shards, batch_size, want=("image", "text"), seed=seed, workers=workers,
                                      transform=_Tokenize(tokenize))
        self.batch_size, self.workers = batch_size, workers
        self.states: dict[int, dict[str, int]] = {}
        self.skipped: Counter = Counter()
        self.batches = 0
        if state is not None:
            self._load(state)
        self.pin = pin and self.device.type == "cuda"
        options: dict[str, Any] = {"pin_memory": self.pin}
        if workers > 0:
            options["prefetch_factor"] = prefetch
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers tokenize one batch each
        self.loader = DataLoader(self.dataset, batch_size=None, num_workers=workers, **options)
        self.mean = torch.tensor(OPENAI_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(OPENAI_STD, device=self.device).view(1, 3, 1, 1)
        self._it: Iterator[dict[str, Any]] | None = None
        self._queue: Any = None
        self._error: BaseException | None = None
        if thread:
            self._queue = queue.Queue(maxsize=depth)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._produce, name="shard-feed", daemon=True)
            self._thread.start()

    def _load(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`: the same worker count and number of ranks, or a clear error."""
        _, world = rank_world()
        if int(state.get("workers", -1)) != self.workers or int(state.get("world", -1)) != world:
            raise ValueError(f"the data position was saved with data.workers={state.get('workers')} on "
                             f"{state.get('world')} rank(s); this run has data.workers={self.workers} on {world}: "
                             f"resume with the same settings (the batch order depends on them) or start a new run")
        self.states = {int(k): v for k, v in state["states"].items()}
        self.batches = int(state["batches"])
        self.dataset.load_state(self.states, self.batches)

    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands after the last batch handed out (JSON-ready; per rank)."""
        _, world = rank_world()
        return {"workers": self.workers, "world": world, "batches": self.batches,
                "states": {str(k): dict(v) for k, v in sorted(self.states.items())}}

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, 3, H, W] -> float pixels on the device at the tower's size, CLIP mean/std."""
        return normalize_images(images, self.cfg.vision.image_size, self.device, self.mean, self.std)

    def _device_batch(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        if self._it is None:
            self._it = iter(self.loader)
        batch = next(self._it)
        if "image" in batch.get("lengths", {}):
            raise ValueError("images of different sizes in one batch; write the shards at one size (e.g. 224 px)")
        ids = batch["ids"].pin_memory() if self.pin and not batch["ids"].is_pinned() else batch["ids"]
        info = {"role": batch["__role__"], "state": batch["__state__"], "skips": batch["__skips__"]}
        return self.normalize(batch["image"]), ids.to(self.device, non_blocking=True), info

    def _account(self, info: dict[str, Any]) -> None:
        """A batch was handed to the caller: its worker's position and skips count from now on."""
        self.states[info["role"]] = info["state"]
        self.skipped.update(info["skips"])
        self.batches += 1

    def _produce(self) -> None:
        """Background thread: device batches (on a side stream on CUDA, with an event to wait on) into the queue;
        an exception is queued too, to be raised in the training thread."""
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        while not self._stop.is_set():
            try:
                with torch.cuda.stream(stream) if cuda else nullcontext():
                    pixels, ids, info = self._device_batch()
                    event = torch.cuda.Event() if cuda else None
                    if event is not None:
                        event.record(stream)
                item: Any = (pixels, ids, info, event)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                item = err
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.5)
                    break
                except Exception:  # queue.Full: the consumer is slower; wait, but notice close()
                    continue
            if isinstance(item, BaseException):
                return

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._queue is None:
            pixels, ids, info = self._device_batch()
            self._account(info)
            return pixels, ids
        if self._error is not None:  # the thread has stopped on it: every later call fails the same way
            raise self._error
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._error = item
            raise item
        pixels, ids, info, event = item
        if event is not None:  # the copies were made on the feed's stream: order them before the step's kernels
            main = torch.cuda.current_stream(self.device)
            main.wait_event(event)
            pixels.record_stream(main)
            ids.record_stream(main)
        self._account(info)
        return pixels, ids

    def close(self) -> None:
        """Stop the background thread (it finishes the batch in hand)."""
        if self._queue is not None:
            self._stop.set()
            self._thread.join(timeout=10)
        self._it = None  # lets the DataLoader shut its workers down

    def __iter__(self) -> "ShardFeed":
        return self
