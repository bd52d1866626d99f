"""The real-data path of the fast contrastive step: WebDataset shards (png|jpg + txt) decoded by DataLoader worker
processes, copied and normalised on the GPU by a feeder thread on its own CUDA stream, a few batches ahead of the
step; captions as byte tokens (a tokenizer-free text input for throughput runs)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from sensorium.data.loader import StreamingDataset, StreamingLoader
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


class ShardFeed:
    """Endless (pixels, ids) batches from WebDataset shards for a DualEncoder: images decoded to uint8 in
    `workers` DataLoader processes, copied to the device, resized if needed and normalised there (CLIP
    mean/std); captions as `byte_tokens`. With `thread` (the default) a background thread does the copies and
    the normalisation on its own CUDA stream, `depth` batches ahead, so the training thread only launches the step
    and the copies overlap its kernels. Pageable copies (`pin=False`, the default) beat pinned ones here: pinning
    costs the main process a copy per batch (ViT-B-16 on an H100: 69% of the synthetic rate kept against 53%,
    bench/results/train_throughput_h100_shards_feeder.json). Epochs repeat until the caller stops; errors surface on
    the next `next`."""

    def __init__(self, shards: Any, cfg: DualEncoderConfig, batch_size: int, device: torch.device | str,
                 workers: int = 4, prefetch: int = 4, seed: int = 0, pin: bool = False, thread: bool = True,
                 depth: int = 3):
        self.cfg, self.device = cfg, torch.device(device)
        dataset = StreamingDataset(shards, want={"image", "text"}, shuffle=True, seed=seed)
        self.pin = pin and self.device.type == "cuda"
        options = {"pin_memory": self.pin, "drop_last": True}
        if workers > 0:
            options["prefetch_factor"] = prefetch
        self.loader = StreamingLoader(dataset, batch_size=batch_size, num_workers=workers, **options)
        self.workers = workers
        self.mean = torch.tensor(OPENAI_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(OPENAI_STD, device=self.device).view(1, 3, 1, 1)
        self._it: Iterator[dict[str, Any]] | None = None
        self.batches = 0
        self._queue: Any = None
        self._error: BaseException | None = None
        if thread:
            import queue
            import threading

            self._queue = queue.Queue(maxsize=depth)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._produce, name="shard-feed", daemon=True)
            self._thread.start()

    def _next_batch(self) -> dict[str, Any]:
        for _ in range(2):  # a fresh epoch when the last one ended
            if self._it is None:
                self._it = iter(self.loader)
            batch = next(self._it, None)
            if batch is not None:
                return batch
            self._it = None
        raise ValueError("the shards hold no complete batch of samples with an image and a caption")

    def _device_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self._next_batch()
        images, present = batch["image"], batch["present"]
        if not bool(present["image"].all() and present["text"].all()):
            raise ValueError(f"batch with keys {batch['__key__'][:3]}...: some samples lack an image or a caption")
        if "image" in batch.get("lengths", {}):
            raise ValueError("images of different sizes in one batch; write the shards at one size (e.g. 224 px)")
        v, t = self.cfg.vision, self.cfg.text
        pixels = images.to(self.device, non_blocking=True).float().div_(255)
        if pixels.shape[-2:] != (v.image_size, v.image_size):
            pixels = nn.functional.interpolate(pixels, size=(v.image_size, v.image_size), mode="bilinear",
                                               antialias=True)
        pixels = (pixels - self.mean) / self.std
        ids = byte_tokens(batch["text"], t.context_length, t.vocab_size)
        ids = ids.pin_memory() if self.pin else ids
        return pixels, ids.to(self.device, non_blocking=True)

    def _produce(self) -> None:
        """Background thread: device batches (on a side stream on CUDA, with an event to wait on) into the queue;
        an exception is queued too, to be raised in the training thread."""
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        while not self._stop.is_set():
            try:
                with torch.cuda.stream(stream) if cuda else nullcontext():
                    pixels, ids = self._device_batch()
                    event = torch.cuda.Event() if cuda else None
                    if event is not None:
                        event.record(stream)
                item: Any = (pixels, ids, event)
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
            self.batches += 1
            return self._device_batch()
        if self._error is not None:  # the thread has stopped on it: every later call fails the same way
            raise self._error
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._error = item
            raise item
        pixels, ids, event = item
        if event is not None:  # the copies were made on the feed's stream: order them before the step's kernels
            main = torch.cuda.current_stream(self.device)
            main.wait_event(event)
            pixels.record_stream(main)
            ids.record_stream(main)
        self.batches += 1
        return pixels, ids

    def close(self) -> None:
        """Stop the background thread (it finishes the batch in hand)."""
        if self._queue is not None:
            self._stop.set()
            self._thread.join(timeout=10)

    def __iter__(self) -> "ShardFeed":
        return self
