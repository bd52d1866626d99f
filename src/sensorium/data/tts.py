"""Speech synthesis with Debian's espeak-ng: any text, many voices, as 16 kHz mono float32."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass

import numpy as np

from sensorium.core.errors import MissingDependency
from sensorium.modalities.audio import SAMPLE_RATE, Waveform, resample

# English voices and variants that espeak-ng ships; a (voice, variant) pair gives distinct timbres.
VOICES = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc")
VARIANTS = ("m1", "m3", "f1", "f2", "f4", "m7", "klatt", "croak")


@dataclass(frozen=True)
class Voice:
    """One speaking style: espeak voice+variant, words per minute and pitch (0-99)."""

    voice: str = "en-us"
    variant: str = "m1"
    speed: int = 160
    pitch: int = 50

    def as_dict(self) -> dict:
        return {"voice": self.voice, "variant": self.variant, "speed": self.speed, "pitch": self.pitch}


def espeak_binary() -> str:
    """espeak-ng from $SENSORIUM_ESPEAK (a carried bundle) or PATH, else an error saying how to install it."""
    exe = os.environ.get("SENSORIUM_ESPEAK") or shutil.which("espeak-ng")
    if exe is None:
        raise MissingDependency("espeak-ng is not installed; install it with: sudo apt-get install -y espeak-ng")
    return exe


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV bytes -> (float32 samples, rate). espeak's --stdout header carries no valid length,
    so the data chunk is taken to the end of the stream."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    rate = struct.unpack("<I", data[24:28])[0]
    channels, bits = struct.unpack("<H", data[22:24])[0], struct.unpack("<H", data[34:36])[0]
    if bits != 16:
        raise ValueError(f"expected 16-bit PCM, got {bits}-bit")
    start = data.find(b"data", 36) + 8
    pcm = np.frombuffer(data[start:start + (len(data) - start) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        pcm = pcm[: len(pcm) // channels * channels].reshape(-1, channels).mean(axis=1)
    return pcm, rate


def voice_for(index: int, rng: np.random.Generator | None = None) -> Voice:
    """A deterministic varied voice: cycles voices/variants and draws speed and pitch from `rng`."""
    rng = rng or np.random.default_rng(index)
    return Voice(VOICES[index % len(VOICES)], VARIANTS[(index // len(VOICES)) % len(VARIANTS)],
                 int(rng.integers(130, 200)), int(rng.integers(30, 70)))


def synthesize(text: str, voice: Voice = Voice()) -> Waveform:
    """Speak `text` with espeak-ng and return a 16 kHz waveform."""
    cmd = [espeak_binary(), "-v", f"{voice.voice}+{voice.variant}", "-s", str(voice.speed), "-p", str(voice.pitch),
           "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng failed for {text[:40]!r}: {proc.stderr.decode(errors='replace')[:200]}")
    samples, rate = parse_wav(proc.stdout)
    return Waveform(resample(samples, rate, SAMPLE_RATE), SAMPLE_RATE)
