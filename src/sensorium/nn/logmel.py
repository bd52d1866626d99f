"""Log-mel front ends: mel filter banks (Slaney or HTK scale, Slaney area normalisation, as librosa and Whisper)
and `LogMel`, a module that turns padded waveforms into log-mel frames on any device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sensorium.modalities.audio import SAMPLE_RATE


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = 200.0 * mel / 3.0
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel[log_region] - 15.0))
    return hz


def mel_filters(n_fft: int, n_mels: int, sampling_rate: int, f_max: float = 8000.0, f_min: float = 0.0,
                htk: bool = False) -> np.ndarray:
    """Slaney-normalized triangular mel filters [n_fft // 2 + 1, n_mels] on the Slaney mel scale (as librosa and
    Whisper) or, with `htk=True`, the HTK scale 2595 log10(1 + f/700) (Sensorium's own speech tower)."""
    to_mel = (lambda f: 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)) if htk else _hz_to_mel
    to_hz = (lambda m: 700.0 * (10 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)) if htk else _mel_to_hz
    fft_freqs = np.linspace(0, sampling_rate // 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(to_mel(np.array([f_min]))[0], to_mel(np.array([f_max]))[0], n_mels + 2))
    diff = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down, up = -slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[None, :]


@dataclass
class MelConfig:
    """Log-mel front end: 25 ms windows every 10 ms, 80 bands up to 8 kHz."""
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 400
    hop: int = 160
    n_mels: int = 80
    fmin: float = 20.0
    fmax: float = 8000.0


def mel_filterbank(config: MelConfig) -> torch.Tensor:
    """Triangular HTK-mel filters [n_mels, n_fft//2+1], area-normalised (Slaney style)."""
    return torch.from_numpy(mel_filters(config.n_fft, config.n_mels, config.sample_rate, config.fmax, config.fmin,
                                        htk=True).T.copy()).float()


class LogMel(nn.Module):
    """Waveforms [B, T] (+ lengths) -> log-mel [B, frames, n_mels] and frame lengths; runs on any device."""
    def __init__(self, config: MelConfig = MelConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("filters", mel_filterbank(config), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = torch.stft(waves.float(), self.config.n_fft, self.config.hop, window=self.window, return_complex=True)
        power = spec.abs().pow(2)  # [B, F, frames]
        mel = torch.log(torch.clamp(self.filters @ power, min=1e-6)).transpose(1, 2)
        frames = torch.div(lengths, self.config.hop, rounding_mode="floor") + 1
        return mel, frames.clamp(max=mel.shape[1])
