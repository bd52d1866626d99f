"""Time series: float32 [T, C] arrays (T steps of C channels), stored exactly as `x.ts.npy` or read from
`x.ts.csv` (an optional header row of channel names is skipped)."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from sensorium.modalities.arrays import from_npy, npy_bytes
from sensorium.modalities.registry import DecodeError, Modality, register

_COLOURS = ((230, 80, 60), (60, 160, 230), (90, 200, 90), (230, 190, 40), (190, 90, 220), (40, 200, 190))


def _decode(data: bytes, ext: str) -> np.ndarray:
    if ext.endswith("npy"):
        values = from_npy(data)
    else:
        try:
            rows = [row for row in csv.reader(io.StringIO(data.decode("utf-8"))) if row]
        except UnicodeDecodeError as exc:
            raise DecodeError(f"time-series CSV is not UTF-8 ({exc.reason})") from None
        try:
            float(rows[0][0])
        except (ValueError, IndexError):
            rows = rows[1:]  # header
        try:
            values = np.array([[float(cell) for cell in row] for row in rows], dtype=np.float32)
        except ValueError as exc:
            raise DecodeError(f"time-series CSV has a non-numeric or ragged row ({exc})") from None
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] == 0 or not np.issubdtype(values.dtype, np.number):
        raise DecodeError(f"a time series must be a non-empty numeric [T, C] array, got {values.dtype} {values.shape}")
    return values.astype(np.float32)


def _encode(value: np.ndarray) -> tuple[str, bytes]:
    values = np.asarray(value, dtype=np.float32)
    return "ts.npy", npy_bytes(values if values.ndim == 2 else values.reshape(len(values), -1))


def _to_tensor(value: np.ndarray) -> Any:
    """Series -> float32 tensor [T, C] (batches pad T to the longest and report `lengths`)."""
    return torch.from_numpy(np.asarray(value, dtype=np.float32).copy())


def line_plot(values: np.ndarray, width: int = 160, height: int = 64) -> Image.Image:
    """Draw each channel of a [T, C] array as a min/max-normalised line: a cheap preview without matplotlib."""
    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    values = np.asarray(values, dtype=np.float64)
    steps = values.shape[0]
    if steps > width * 2:  # envelope of long signals (audio): keep min and max per pixel column
        cut = values[: steps - steps % width].reshape(width, -1, values.shape[1])
        values = np.stack([cut.min(axis=1), cut.max(axis=1)], axis=1).reshape(width * 2, values.shape[1])
    xs = np.linspace(1, width - 2, len(values))
    for channel in range(values.shape[1]):
        column = values[:, channel]
        low, high = column.min(), column.max()
        scaled = (column - low) / (high - low) if high > low else np.full_like(column, 0.5)
        ys = (height - 3) - scaled * (height - 5)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=_COLOURS[channel % len(_COLOURS)], width=1)
    return image


TIMESERIES = register(Modality("timeseries", ("ts.npy", "ts.csv"), _decode, _encode,
                               description="sensor traces, float32 [T, C]", to_tensor=_to_tensor,
                               preview=lambda value: line_plot(value), tokenizer="series_patches"))
