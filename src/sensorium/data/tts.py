"""Speech synthesis with Debian's espeak-ng: any text, many voices, as 16 kHz mono float32."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from ..modalities.audio import SAMPLE_RATE, Waveform, resample
from ..towers.base import MissingDependency

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
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise MissingDependency("espeak-ng is not installed; install it with: sudo apt-get install -y espeak-ng")
    return exe


def voice_for(index: int, rng: np.random.Generator | None = None) -> Voice:
    """A deterministic varied voice: cycles voices/variants and draws speed and pitch from `rng`."""
    rng = rng or np.random.default_rng(index)
    return Voice(VOICES[index % len(VOICES)], VARIANTS[(index // len(VOICES)) % len(VARIANTS)],
                 int(rng.integers(130, 200)), int(rng.integers(30, 70)))


def synthesize(text: str, voice: Voice = Voice()) -> Waveform:
    """Speak `text` with espeak-ng and return a 16 kHz waveform."""
    import soundfile as sf

    cmd = [espeak_binary(), "-v", f"{voice.voice}+{voice.variant}", "-s", str(voice.speed), "-p", str(voice.pitch),
           "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng failed for {text[:40]!r}: {proc.stderr.decode(errors='replace')[:200]}")
    samples, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return Waveform(resample(samples, rate, SAMPLE_RATE), SAMPLE_RATE)
