"""Video clips: `Clip(frames uint8 [T, H, W, 3], fps)`. Stored losslessly as a horizontal film strip PNG with
the frame count and rate in its tEXt chunk (`x.video.png`: one decode, viewable in any image viewer), or as
`x.video.npy`; animated GIF/APNG files are read too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageSequence

from sensorium.modalities.arrays import from_npy, png_array, png_bytes
from sensorium.modalities.image import open_image
from sensorium.modalities.registry import DecodeError, Modality, register

DEFAULT_FPS = 8.0


@dataclass
class Clip:
    """A short RGB clip: frames uint8 [T, H, W, 3] at `fps` frames per second."""

    frames: np.ndarray
    fps: float = DEFAULT_FPS

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps


def _film_strip(data: bytes) -> Clip:
    strip, text = png_array(data)
    if "frames" not in text:
        raise DecodeError("a .video.png film strip needs a 'frames' tEXt entry")
    count = int(text["frames"])
    if strip.ndim == 2:
        strip = np.repeat(strip[..., None], 3, axis=2)
    if count <= 0 or strip.shape[1] % count:
        raise DecodeError(f"film strip width {strip.shape[1]} is not a multiple of its {count} frames")
    frames = np.stack(np.split(strip[..., :3], count, axis=1)).astype(np.uint8)
    return Clip(frames, float(text.get("fps", DEFAULT_FPS)))


def _animated(data: bytes) -> Clip:
    image = open_image(data)
    frames, durations = [], []
    for frame in ImageSequence.Iterator(image):
        frames.append(np.asarray(frame.convert("RGB")))
        durations.append(frame.info.get("duration") or 1000.0 / DEFAULT_FPS)
    return Clip(np.stack(frames), 1000.0 / float(np.mean(durations)))


def _decode(data: bytes, ext: str) -> Clip:
    if ext.endswith("npy"):
        frames = from_npy(data)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise DecodeError(f"video .npy must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
        return Clip(frames.astype(np.uint8), DEFAULT_FPS)
    if ext.endswith("video.png"):
        return _film_strip(data)
    return _animated(data)


def _encode(value: Clip) -> tuple[str, bytes]:
    frames = np.asarray(value.frames, dtype=np.uint8)
    strip = np.concatenate(list(frames), axis=1)
    return "video.png", png_bytes(strip, {"frames": str(len(frames)), "fps": repr(float(value.fps))})


def _to_tensor(value: Clip) -> Any:
    """Clip -> uint8 tensor [T, 3, H, W] (batches pad T to the longest and report `lengths`)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(value.frames).transpose(0, 3, 1, 2)))


def _preview(value: Clip) -> Image.Image:
    """First, two middle and last frames as a 2x2 grid (square frames give a square preview)."""
    frames = value.frames
    picks = [frames[int(round(i))] for i in np.linspace(0, len(frames) - 1, 4)]
    grid = np.concatenate([np.concatenate(picks[:2], axis=1), np.concatenate(picks[2:], axis=1)], axis=0)
    return Image.fromarray(grid)


VIDEO = register(Modality("video", ("video.png", "video.npy", "gif", "apng"), _decode, _encode,
                          description="short RGB clips", to_tensor=_to_tensor, preview=_preview,
                          tokenizer="tubelets"))

__all__ = ["Clip", "VIDEO"]
