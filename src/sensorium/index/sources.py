"""What an index reads: WebDataset shards (the project's own `{key}.png/.txt/.wav/.json` samples and foreign ones),
JSONL/CSV manifests and folders of files, each turned into items of one modality that remember where their content
lives (a file, or a shard and member) so a server can hand it back. A sample's `.json` becomes every one of its
items' metadata; its text becomes the title of its image and audio items."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from sensorium import modalities
from sensorium.data.formats import ManifestSource
from sensorium.data.shards import SkipLog, expand_shards, iter_raw, split_key
from sensorium.modalities import DecodeError

THUMB = 160


@dataclass
class Item:
    """One thing to embed: its modality, decoded value and where its content lives."""

    modality: str
    value: Any
    locator: str
    source: str
    member: str | None = None
    title: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    text: str | None = None


def thumbnail(image: Image.Image, size: int = THUMB) -> bytes:
    """A small JPEG of an image for result grids."""
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=82)
    return buf.getvalue()


def _decode(ext: str, data: bytes, where: str, skips: SkipLog, wanted: set[str]) -> tuple[str, Any] | None:
    modality = modalities.for_extension(ext)
    if modality is None or modality.name not in wanted:
        return None
    try:
        return modality.name, modality.decode(data, ext)
    except DecodeError as exc:
        skips.skip(f"corrupt_{modality.name}", where, f".{ext}: {exc}")
        return None


def _sample_items(members: dict[str, Any], key: str, source: str, base_meta: dict[str, Any], skips: SkipLog,
                  wanted: set[str], where: str, member_of: Any) -> list[Item]:
    """Items of one sample (members `{ext: bytes}`): one per member whose modality is wanted."""
    meta = dict(base_meta)
    if "json" in members:
        try:
            extra = json.loads(members["json"])
            meta.update(extra if isinstance(extra, dict) else {"json": extra})
        except ValueError as exc:
            skips.skip("bad_json", where, f".json member is not JSON ({exc})")
    decoded = [(ext, d) for ext, data in members.items() if ext != "json"
               for d in [_decode(ext, data, where, skips, wanted)] if d is not None]
    caption = next((v for _, (m, v) in decoded if m == "text"), None)
    items = []
    for ext, (modality, value) in decoded:
        text = value if isinstance(value, str) else None
        title = (text or caption or key)[:300]
        source_path, member = member_of(ext)
        items.append(Item(modality, value, f"{source_path}::{member}" if member else source_path, source_path, member,
                          title, meta, text))
    return items


def shard_items(spec: Any, skips: SkipLog, wanted: set[str]) -> Iterator[Item]:
    """Items of WebDataset shards; content = shard path + member name."""
    for shard in expand_shards(spec):
        shard_path = str(Path(shard).resolve())
        for raw in iter_raw(Path(shard), skips):
            key = raw["__key__"]
            members = {ext: data for ext, data in raw.items() if not ext.startswith("__")}
            yield from _sample_items(members, key, shard_path, {"key": key, "shard": Path(shard).name}, skips,
                                     wanted, f"{shard}:{key}", lambda ext, k=key, s=shard_path: (s, f"{k}.{ext}"))


def folder_items(root: Path, skips: SkipLog, wanted: set[str]) -> Iterator[Item]:
    """Items of a folder of files (any depth); files sharing a stem in one folder form a sample."""
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stem, ext = split_key(path.name)
        if ext == "json" or modalities.for_extension(ext) is not None:
            groups.setdefault((str(path.parent), stem), {})[ext] = path
    for (parent, stem), files in groups.items():
        folder = os.path.relpath(parent, root)
        meta = {"key": stem, "folder": "" if folder == "." else folder}
        members: dict[str, Any] = {}
        for ext, path in files.items():
            try:
                members[ext] = path.read_bytes()
            except OSError as exc:
                skips.skip("unreadable_file", str(path), str(exc))
        yield from _sample_items(members, stem, parent, meta, skips, wanted, f"{parent}/{stem}",
                                 lambda ext, f=files: (str(f[ext].resolve()), None))


def manifest_items(path: Path, skips: SkipLog, wanted: set[str]) -> Iterator[Item]:
    """Items of a JSONL/CSV manifest: a column named after a modality (or `<modality>_file`) holds a file path
    relative to the manifest, or inline text; other columns are metadata."""
    manifest = ManifestSource(path)
    source = str(path.resolve())
    for number, row in manifest.items:
        meta = {c: v for c, v in row.items() if c.removesuffix("_file") not in modalities.names()}
        meta["row"] = number
        caption = next((str(v) for c, v in row.items() if c == "text" and v), None)
        for column, cell in row.items():
            name = column.removesuffix("_file")
            if name not in modalities.names() or name not in wanted or cell in (None, ""):
                continue
            where = f"{path}:{number}"
            if column == name and modalities.get(name).metadata.get("inline"):
                text = str(cell)
                yield Item(name, text, f"{source}#{number}:{column}", source, None, text[:300], meta,
                           text if name == "text" else None)
                continue
            file = Path(str(cell)).expanduser()
            file = (file if file.is_absolute() else path.parent / file).resolve()
            if not file.is_file():
                skips.skip("missing_file", where, f"column {column!r} points at missing file {file}")
                continue
            decoded = _decode(split_key(file.name)[1], file.read_bytes(), where, skips, {name})
            if decoded is not None:
                yield Item(name, decoded[1], str(file), str(file), None, (caption or file.name)[:300], meta)


def iter_items(sources: Iterable[str | os.PathLike], wanted: Iterable[str], skips: SkipLog) -> Iterator[Item]:
    """Items of every source: shard specs (a .tar, a folder of them, a glob or brace pattern), a .jsonl/.csv manifest,
    a folder of files, or one file."""
    wanted = set(wanted)
    for spec in sources:
        text = str(spec)
        path = Path(text).expanduser()
        if path.suffix.lower() in (".jsonl", ".csv"):
            yield from manifest_items(path, skips, wanted)
        elif path.is_dir() and not any(path.rglob("*.tar")):
            yield from folder_items(path, skips, wanted)
        elif path.is_file() and not text.endswith(".tar"):
            stem, ext = split_key(path.name)
            if modalities.for_extension(ext) is None:
                raise ValueError(f"{path}: not a shard (.tar), manifest (.jsonl/.csv), folder or file of a known "
                                 f"modality ({', '.join(modalities.names())})")
            yield from folder_items_of([path], skips, wanted)
        else:
            yield from shard_items(text, skips, wanted)


def folder_items_of(files: list[Path], skips: SkipLog, wanted: set[str]) -> Iterator[Item]:
    """Items of single files given by path."""
    for path in files:
        stem, ext = split_key(path.name)
        members = {ext: path.read_bytes()}
        yield from _sample_items(members, stem, str(path.parent), {"key": stem}, skips, wanted, str(path),
                                 lambda e, p=path: (str(p.resolve()), None))
