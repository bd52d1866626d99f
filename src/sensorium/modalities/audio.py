"""Audio (speech and sound): WAV/FLAC/OGG decoded to mono float32 at 16 kHz."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sensorium.modalities.registry import DecodeError, Modality, register
from sensorium.modalities.timeseries import line_plot

SAMPLE_RATE = 16_000


@dataclass
class Waveform:
    """A mono waveform in [-1, 1] with its sample rate."""

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling with soxr (no-op when the rates match)."""
    if rate == target:
        return samples.astype(np.float32, copy=False)
    try:
        import soxr

        return soxr.resample(samples.astype(np.float32), rate, target).astype(np.float32)
    except ImportError:  # e.g. on a GPU image without soxr: scipy's polyphase filter is nearly as good
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(rate, target)
        return resample_poly(samples.astype(np.float32), target // g, rate // g).astype(np.float32)


def _decode(data: bytes, ext: str) -> Waveform:
    import soundfile as sf

    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"not a readable audio file ({type(exc).__name__}: {exc})") from None
    if samples.shape[0] == 0:
        raise DecodeError("audio has no samples")
    mono = samples.mean(axis=1)
    return Waveform(resample(mono, rate), SAMPLE_RATE)


def _encode(value: Waveform) -> tuple[str, bytes]:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(value.samples, dtype=np.float32), value.sample_rate, format="WAV", subtype="PCM_16")
    return "wav", buf.getvalue()


def _to_tensor(value: Waveform) -> Any:
    """Waveform -> float32 tensor [N] (batches pad to the longest and report `lengths`)."""
    return torch.from_numpy(np.asarray(value.samples, dtype=np.float32).copy())


def _preview(value: Waveform) -> Any:
    """The waveform drawn as a line (min/max envelope), for contact sheets."""
    return line_plot(np.asarray(value.samples, dtype=np.float32)[:, None], width=160, height=64)


AUDIO = register(Modality("audio", ("wav", "flac", "ogg", "mp3"), _decode, _encode, default_tower="speech-minilm",
                          description="speech and sound, mono 16 kHz", to_tensor=_to_tensor, preview=_preview,
                          tokenizer="mel_patches"))
