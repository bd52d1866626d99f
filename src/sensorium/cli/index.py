"""`sensorium index build|add|remove|info` and `sensorium search INDEX_DIR "text" | --image P | --audio P`.
The index remembers its model, so `search`, `add` and `serve` are given the index, not the model."""

from __future__ import annotations

import argparse
import difflib
import io
import json
from pathlib import Path

from PIL import Image

from sensorium import modalities


def _print(data: dict) -> None:
    print(json.dumps(data, indent=2, default=str))


def _build(args: argparse.Namespace) -> int:
    from sensorium.index import build

    index, report = build(args.model, args.index, args.sources, modalities=args.modality, overwrite=args.overwrite,
                          batch_size=args.batch_size, strict=args.strict, progress=not args.quiet)
    _print({"index": str(index.root), "items": index.count, "by_modality": index.meta.counts(),
            "added": report["added"], "skipped": report["skipped"]["total"], "search": index.info()["search"]})
    return 0


def _add(args: argparse.Namespace) -> int:
    from sensorium.index import Index

    index = Index.open(args.index, model=args.model, readonly=False)
    report = index.add(args.sources, modalities=args.modality, batch_size=args.batch_size, strict=args.strict,
                       progress=not args.quiet)
    _print({"index": str(index.root), "items": index.count, "added": report["added"], "updated": report["updated"],
            "skipped": report["skipped"]["total"]})
    return 0


def _remove(args: argparse.Namespace) -> int:
    from sensorium.index import Index, parse_where

    index = Index.open(args.index, readonly=False, load_model=False)
    ids = list(args.ids)
    for key, value in parse_where(args.where).items():
        ids += index.meta.ids_where(key, value)
    for source in args.source or []:
        ids += index.meta.ids_of_source(str(Path(source).expanduser().resolve()))
    if not ids:
        raise ValueError("nothing to remove: give item ids, --where key=value or --source PATH that match items")
    removed = index.remove(sorted(set(ids)))
    _print({"index": str(index.root), "removed": removed, "items": index.count})
    return 0


def _info(args: argparse.Namespace) -> int:
    from sensorium.index import Index

    index = Index.open(args.index, load_model=False)
    info = index.info()
    if args.verify:
        info.update(index.verify())
    _print(info)
    return 0


def check_query(args: argparse.Namespace) -> None:
    """Search arguments checked before anything loads: one non-empty query, k >= 1, a known modality filter."""
    given = [name for name, value in (("text", args.text), ("--image", args.image), ("--audio", args.audio))
             if value is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one query: a text, --image FILE or --audio FILE (got {', '.join(given) or 'none'})")
    if args.text is not None and not args.text.strip():
        raise ValueError("the text query is empty; type what to look for, e.g. \"a red apple\"")
    if args.k < 1:
        raise ValueError(f"-k {args.k}: the number of hits must be >= 1")
    for flag, value in (("--modality", args.modality), ("--target", args.target)):
        if value is not None and value not in modalities.names():
            close = difflib.get_close_matches(value, modalities.names(), n=1)
            raise ValueError(f"{flag} {value!r} is not a modality (known: {', '.join(modalities.names())})"
                             + (f"; did you mean {close[0]!r}?" if close else ""))


def _search(args: argparse.Namespace) -> int:
    from sensorium.index import Index, search
    from sensorium.inference.items import to_value

    check_query(args)
    if args.text is not None:
        query, label = {"text": args.text}, args.text
    else:  # decoded before anything loads: a bad query file fails fast, naming the file
        modality = "image" if args.image else "audio"
        path = args.image or args.audio
        query, label = {modality: to_value(modality, path, f"--{modality}")}, f"{modality}: {Path(path).name}"
    index = Index.open(args.index, model=args.model)
    hits = search(index, query, k=args.k, modality=args.modality or args.target, where=args.where)
    for rank, hit in enumerate(hits, 1):
        where = f"{hit.record.source}:{hit.record.member}" if hit.record.member else hit.record.source
        print(f"{rank:>3}  {hit.score:.3f}  #{hit.id:<6} {hit.record.modality:<6} {(hit.record.title or '')[:50]!r}  {where}")
    if not hits:
        print("no hits" + (" (filters matched nothing)" if args.modality or args.target or args.where else ""))
    if args.png:
        _grid(index, hits, label, args.png)
        print(f"grid: {args.png}")
    return 0


def _grid(index, hits, label: str, out: str) -> None:
    """A PNG of the hits: thumbnails of image items, titles of the others."""
    from sensorium.eval.plots import hit_grid

    cells = []
    for hit in hits:
        thumb = index.meta.thumb(hit.id)
        cells.append({"image": Image.open(io.BytesIO(thumb)).convert("RGB") if thumb else None,
                      "text": (hit.record.title or "")[:40], "score": hit.score})
    hit_grid([{"query": label, "hits": cells}], out, title="sensorium search")


def register(commands) -> None:
    help_sources = ("WebDataset shards (a .tar, a folder of them, a glob or {000..009} pattern), .jsonl/.csv manifests, "
                    "folders of files, or files")
    p = commands.add("build", _build, "embed shards, manifests or folders of any modality into a new index",
                     group="index")
    p.add_argument("model", help="a packaged model name (default), a run directory or a checkpoint directory")
    p.add_argument("index", help="index directory to create")
    p.add_argument("sources", nargs="+", help=help_sources)
    p.add_argument("--modality", action="append", help="index only this modality (repeatable; default: all the model "
                   "embeds)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at INDEX")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable item instead of skipping it")

    p = commands.add("add", _add, "add (or update, keeping their ids) items of more sources to an index", group="index")
    p.add_argument("index")
    p.add_argument("sources", nargs="+", help=help_sources)
    p.add_argument("--modality", action="append")
    p.add_argument("--model", default=None, help="the index's model, if it moved since the index was built")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--strict", action="store_true")

    p = commands.add("remove", _remove, "remove items by id, metadata or source", group="index")
    p.add_argument("index")
    p.add_argument("ids", nargs="*", type=int, help="item ids")
    p.add_argument("--where", action="append", metavar="KEY=VALUE", help="remove items whose metadata matches")
    p.add_argument("--source", action="append", metavar="PATH", help="remove items read from this file/shard/folder")

    p = commands.add("info", _info, "what an index holds: counts, model, search kind, files", group="index")
    p.add_argument("index")
    p.add_argument("--verify", action="store_true", help="re-hash every vector file against the record")

    p = commands.add("search", _search, "search an index with text, an image or audio (any-to-any)")
    p.add_argument("index", help="index directory (it knows its model)")
    p.add_argument("text", nargs="?", help="text query")
    p.add_argument("--image", help="image file as the query")
    p.add_argument("--audio", help="audio file as the query")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--modality", help="only return items of this modality")
    p.add_argument("--target", help=argparse.SUPPRESS)  # the old name of --modality
    p.add_argument("--where", action="append", metavar="KEY=VALUE", help="only items whose metadata matches "
                   "(repeatable)")
    p.add_argument("--model", default=None, help="the index's model, if it moved since the index was built")
    p.add_argument("--png", help="also draw the hits as a PNG grid here")
