"""Fixtures shared by the index and server tests: a tiny aligned embedding model over the packaged towers, shards
of coloured squares with captions and tones, and a tiny language decoder trained in seconds to tell a red image
from a blue one."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def png(colour: str, size: int = 64) -> bytes:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    img.paste(COLOURS[colour], (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def wav(freq: float) -> bytes:
    t = np.arange(8000) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def write_shard(path: Path, colours=tuple(COLOURS), prefix: str = "k") -> Path:
    """A shard laid out like the project's clipart shards: {key}.png/.txt/.wav/.json per sample."""
    with tarfile.open(path, "w") as tar:
        for i, colour in enumerate(colours):
            members = {"png": png(colour), "txt": f"a {colour} square".encode(), "wav": wav(200.0 + 100 * i),
                       "json": json.dumps({"colour": colour, "category": "warm" if colour in ("red", "yellow")
                                           else "cold"}).encode()}
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{prefix}{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def aligned_model(root: Path, seed: int = 0) -> Path:
    """A composer-style model: small random linear heads over the packaged image/text towers and log-mel audio."""
    from sensorium.models.aligned import AlignedConfig, AlignedModel, HeadConfig

    torch.manual_seed(seed)
    heads = {"image": HeadConfig(1280, 0), "text": HeadConfig(384, 0), "audio": HeadConfig(320, 0)}
    towers = {"image": "efficientnet-lite0", "text": "minilm-l6", "audio": "logmel-stats"}
    AlignedModel(AlignedConfig(dim=32, heads=heads, towers=towers)).save(root / "model")
    return root


QUESTION = "What shape is the red object?"
ANSWERS = {"red": "circle", "blue": "square"}


def chat_model(root: Path, steps: int = 80) -> Path:
    """A 2-layer decoder over 16 px images trained to answer QUESTION with `circle` for a red image and `square`
    for a blue one (a few seconds on one CPU thread), saved as a run `sensorium.load` reads."""
    import _vlm
    from sensorium.models.template import IGNORE, pad_rows

    model = _vlm.model(max_positions=64).train()
    convs = [[{"role": "user", "content": f"<image>\n{QUESTION}"}, {"role": "assistant", "content": answer}]
             for answer in ANSWERS.values()]
    images = [_vlm.image(COLOURS[c]) for c in ANSWERS]
    encoded = model.tokenizer.encode_batch(convs)
    ids, padding = pad_rows([e.ids for e in encoded], model.tokenizer.pad_id, "right")
    labels = pad_rows([e.labels for e in encoded], IGNORE, "right")[0]
    batch = {"ids": ids, "padding": padding, "labels": labels, "media": {"image": model.towers["image"].prepare(images)}}
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(steps):
        loss, _ = model.loss(batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval().save(root)
    return root


def data_uri(data: bytes, mime: str = "image/png") -> str:
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`sensorium serve ...` in a subprocess on 127.0.0.1, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, *args: str, timeout: float = 180):
        import os
        import subprocess
        import sys
        import time
        import urllib.request

        src = Path(__file__).resolve().parents[1] / "src"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"sensorium-serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "sensorium", "serve", *args, "--port", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"sensorium serve exited ({self.proc.returncode}):\n{self.log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"sensorium serve did not answer /health within {timeout}s")

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)
        self.log.close()
