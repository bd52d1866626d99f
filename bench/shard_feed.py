"""The real-data path alone: samples/s that `ShardFeed` (WebDataset shards -> decoding workers -> pinned, device
batches for a ViT-B-16 dual encoder) delivers for several worker counts, with no training step. If the rate grows
with the workers, decoding limits it; if it stays flat, the main process does. Also the shards the benches feed
from: `world_shards` (Sensorium World samples) and `jpeg_shards` (their images re-encoded as JPEG).

Usage:  PYTHONPATH=src python3 bench/shard_feed.py --shards DIR --out OUT.json [--workers 1,4,8,14] [--pin on,off]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def world_shards(folder: Path, n: int, size: int) -> Path:
    """n Sensorium World samples (PNG image at `size` px + caption) written as WebDataset shards (reused if there)."""
    import os

    from sensorium.data.world import WorldConfig, write_world

    if not any(folder.glob("*.tar")):
        write_world(folder, n, "train", 0, WorldConfig(image_size=size), ("image", "text"),
                    shard_size=max(16, n // 48), workers=max(1, os.cpu_count() or 1), progress=False)
    return folder


def jpeg_shards(src: Path, dst: Path, quality: int = 90) -> Path:
    """The WebDataset shards in `src` with every .png member re-encoded as .jpg at `quality` (the other members
    copied), written to `dst` (reused if there): real image-text datasets are mostly JPEG."""
    import io
    import tarfile

    from PIL import Image

    if any(dst.glob("*.tar")):
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    for shard in sorted(src.glob("*.tar")):
        with tarfile.open(shard) as tin, tarfile.open(dst / shard.name, "w") as tout:
            for member in tin.getmembers():
                data = tin.extractfile(member).read() if member.isfile() else None
                if data is not None and member.name.endswith(".png"):
                    buf = io.BytesIO()
                    Image.open(io.BytesIO(data)).convert("RGB").save(buf, "JPEG", quality=quality)
                    data, member = buf.getvalue(), tarfile.TarInfo(member.name.removesuffix(".png") + ".jpg")
                member.size = len(data) if data is not None else member.size
                tout.addfile(member, io.BytesIO(data) if data is not None else None)
    return dst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--workers", default="1,4,8,14")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--pin", default="on", help="comma list of on/off: pinned host memory for the copies")
    parser.add_argument("--thread", choices=["on", "off"], default="off",
                        help="ShardFeed's feeder thread (off: the main thread copies, as in the committed results)")
    args = parser.parse_args()
    import torch
    from _machine import machine

    from sensorium.train.fast import clip_config, sync
    from sensorium.train.shard_feed import ShardFeed

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for workers, pin in [(int(w), p == "on") for p in args.pin.split(",") for w in args.workers.split(",")]:
        feed = ShardFeed(args.shards, clip_config("ViT-B-16"), args.batch_size, device, workers=workers, pin=pin,
                         thread=args.thread == "on")
        for _ in range(max(1, workers)):  # the first wave: worker start-up
            next(feed)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            next(feed)
            n += args.batch_size
        sync(device)
        rate = n / (time.perf_counter() - start)
        rows.append({"workers": workers, "pin_memory": pin, "samples_per_s": round(rate, 1),
                     "per_worker": round(rate / max(1, workers), 1), "thread": args.thread == "on"})
        print(rows[-1], flush=True)
        feed.close()
    info = machine()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    args.out.write_text(json.dumps({"machine": info, "shards": args.shards, "batch_size": args.batch_size,
                                    "seconds_each": args.seconds, "device": device.type, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
