"""`sensorium index RUN PATHS...` and `sensorium search RUN "text" | --image P | --audio P`."""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path

from PIL import Image

from sensorium import modalities
from sensorium.eval.harness import load_run
from sensorium.eval.plots import hit_grid
from sensorium.index.store import VectorIndex, embed_query


def _index(args: argparse.Namespace) -> int:

    index, skips = VectorIndex.build(load_run(args.run), args.paths, strict=args.strict, progress=not args.quiet)
    out = Path(args.run) / "index"
    index.save(out)
    counts: dict[str, int] = {}
    for item in index.items:
        counts[item["modality"]] = counts.get(item["modality"], 0) + 1
    print(json.dumps({"index": str(out), "items": counts, "skipped": skips["total"]}))
    return 0


def check_query(args: argparse.Namespace) -> None:
    """Search arguments checked before anything loads: one non-empty query, k >= 1, a known --target."""
    given = [name for name, value in (("text", args.text), ("--image", args.image), ("--audio", args.audio))
             if value is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one query: a text, --image FILE or --audio FILE (got {', '.join(given) or 'none'})")
    if args.text is not None and not args.text.strip():
        raise ValueError("the text query is empty; type what to look for, e.g. \"a red apple\"")
    if args.k < 1:
        raise ValueError(f"-k {args.k}: the number of hits must be >= 1")
    if args.target is not None and args.target not in modalities.names():
        close = difflib.get_close_matches(args.target, modalities.names(), n=1)
        raise ValueError(f"--target {args.target!r} is not a modality (known: {', '.join(modalities.names())})"
                         + (f"; did you mean {close[0]!r}?" if close else ""))


def _search(args: argparse.Namespace) -> int:
    from sensorium.inference.items import to_value

    check_query(args)
    if args.text:
        modality, value, label = "text", args.text, args.text
    else:  # decoded before anything loads: a bad query file fails fast, naming the file
        modality = "image" if args.image else "audio"
        path = args.image or args.audio
        value = to_value(modality, path, f"--{modality}")
        label = f"{modality}: {Path(path).name}"
    model = load_run(args.run)
    index = VectorIndex.load(Path(args.run) / "index")
    hits = index.search(embed_query(model, modality, value), k=args.k, modality=args.target)
    for rank, hit in enumerate(hits, 1):
        preview = f"  {hit.item['text'][:60]!r}" if hit.item.get("text") else ""
        print(f"{rank:>3}  {hit.score:.3f}  {hit.item['modality']:<6} {hit.item['path']}{preview}")
    grid_rows = [{"query": label, "hits": [
        {"image": _thumb(h.item), "text": h.item.get("text") or Path(h.item["path"]).name, "score": h.score}
        for h in hits]}]
    out = Path(args.png or Path(args.run) / "search.png")
    hit_grid(grid_rows, out, title="sensorium search")
    print(f"grid: {out}")
    return 0


def _thumb(item: dict):
    if item["modality"] != "image":
        return None

    return Image.open(item["path"]).convert("RGB")


def register(commands) -> None:
    p = commands.add("index", _index, "embed files of any modality into a persistent index (RUN/index)")
    p.add_argument("run")
    p.add_argument("paths", nargs="+", help="files or folders")
    p.add_argument("--strict", action="store_true")
    p = commands.add("search", _search, "search the run's index with text, an image or audio")
    p.add_argument("run")
    p.add_argument("text", nargs="?", help="text query")
    p.add_argument("--image", help="image file as the query")
    p.add_argument("--audio", help="audio file as the query")
    p.add_argument("--target", help="only return items of this modality")
    p.add_argument("-k", type=int, default=8)
    p.add_argument("--png", help="where to write the grid of hits (default RUN/search.png)")
