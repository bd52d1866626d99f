"""openclipart shards (png + txt) downscaled to 64 px, captions kept: the clipart captions the packaged decoder
replays (configs/decoder-packaged.yaml), small enough to carry to a GPU machine.

    PYTHONPATH=src python3 bench/clipart64.py data/clipart data/clipart64
"""
import io, sys
from pathlib import Path
from PIL import Image
from sensorium.data.shards import ShardWriter, iter_raw, expand_shards
src, out = Path(sys.argv[1]), Path(sys.argv[2])
for split in ("train", "val", "test"):
    (out / split).mkdir(parents=True, exist_ok=True)
    n = 0
    with ShardWriter(out / split, prefix=split, max_count=10000) as w:
        for shard in expand_shards(src / split):
            for raw in iter_raw(shard):
                if "png" not in raw or "txt" not in raw:
                    continue
                img = Image.open(io.BytesIO(raw["png"])).convert("RGBA")
                canvas = Image.new("RGB", img.size, (255, 255, 255)); canvas.paste(img, mask=img.getchannel("A"))
                buf = io.BytesIO(); canvas.resize((64, 64), Image.BICUBIC).save(buf, "PNG", optimize=True)
                w.write({"__key__": raw["__key__"], "png": buf.getvalue(), "txt": raw["txt"]})
                n += 1
    print(split, n)
