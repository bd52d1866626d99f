"""Readers for the formats users' data already comes in: WebDataset shards, JSONL/CSV manifests pointing at
files, COCO-captions JSON, and a folder of class subfolders. Each is a `Source`: a list of named units (a shard,
a chunk of rows) that workers read independently, raw items that are cheap to skip (for resuming), and a decode
step through the modality registry that drops a bad member (counted) or skips a sample (counted, or raises)."""

from __future__ import annotations

import csv
import difflib
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

from sensorium import modalities
from sensorium.core.files import read_json
from sensorium.data.shards import SkipLog, decode_sample, expand_shards, iter_raw, split_key
from sensorium.modalities import DecodeError


class Source(Protocol):
    """A dataset cut into independently readable units."""

    def units(self) -> list[str]:
        """Stable unit names (used by workers to split work and by resume state)."""

    def raw(self, unit: int, skips: SkipLog) -> Iterator[Any]:
        """Undecoded items of one unit, in order; cheap, so resuming can skip consumed ones."""

    def decode(self, item: Any, skips: SkipLog, want: set[str] | None) -> dict[str, Any] | None:
        """`{"__key__", modality: value, "json"?: dict, "label"?: int}` or None when the sample is skipped."""


class ShardSource:
    """WebDataset tar shards (directory, glob, brace pattern or list); a unit is one shard."""

    def __init__(self, spec: Any):
        self.shards = expand_shards(spec)

    def units(self) -> list[str]:
        return [str(p) for p in self.shards]

    def raw(self, unit: int, skips: SkipLog) -> Iterator[dict[str, Any]]:
        return iter_raw(self.shards[unit], skips)

    def decode(self, item: dict[str, Any], skips: SkipLog, want: set[str] | None) -> dict[str, Any] | None:
        return decode_sample(item, skips, want)


def read_file(path: Path, modality: str | None, where: str, skips: SkipLog) -> tuple[str, Any] | None:
    """Decode one file as `modality` (or by its extension); a failure is counted as corrupt and gives None."""
    _, ext = split_key(path.name)
    found = modalities.get(modality) if modality else modalities.for_extension(ext)
    if found is None:
        return None
    try:
        return found.name, found.decode(path.read_bytes(), ext)
    except DecodeError as exc:
        skips.skip(f"corrupt_{found.name}", where, f"{path}: {exc}")
    except OSError as exc:
        skips.skip(f"unreadable_{found.name}", where, f"{path}: {exc}")
    return None


class _ItemSource:
    """Shared plumbing of in-memory item lists (manifest rows, COCO images, folder files): fixed-size units."""

    name: str = "items"
    items: list[Any]

    def __init__(self, items_per_unit: int = 256):
        self.items_per_unit = max(1, items_per_unit)

    def units(self) -> list[str]:
        count = (len(self.items) + self.items_per_unit - 1) // self.items_per_unit
        return [f"{self.name}#{k}" for k in range(count)]

    def raw(self, unit: int, skips: SkipLog) -> Iterator[Any]:
        return iter(self.items[unit * self.items_per_unit:(unit + 1) * self.items_per_unit])

    def __len__(self) -> int:
        return len(self.items)


def _resolve(root: Path, value: str) -> Path:
    """Relative paths are relative to the manifest's folder (or the given root); absolute ones are kept."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


class ManifestSource(_ItemSource):
    """JSONL or CSV manifests: one row per sample. A column named after a modality holds a file path (relative
    to the manifest's folder) or, for inline modalities (text, tabular, qa), the value itself; a `<modality>_file`
    column always holds a path. `columns` renames columns onto modalities (`{"caption": "text"}`). Other columns
    go to `json`; an integer `label` column also becomes the sample's label. A row whose file is missing is skipped
    and counted (`missing_file`), or raises with a strict SkipLog."""

    def __init__(self, path: str | os.PathLike, root: str | os.PathLike | None = None,
                 columns: dict[str, str] | None = None, items_per_unit: int = 256):
        super().__init__(items_per_unit)
        self.path = Path(path)
        self.name = self.path.name
        self.root = Path(root) if root is not None else self.path.parent
        self.columns = dict(columns or {})
        self.items = self._rows()
        if not self.items:
            raise ValueError(f"{self.path}: the manifest has no rows")
        self._check_columns()

    def _rows(self) -> list[tuple[int, dict[str, Any]]]:
        """(line number, row) pairs; a CSV row with more or fewer cells than the header becomes `{"__bad__": why}`,
        skipped and counted when read (an error when strict)."""
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: manifest not found")
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{self.path}: not UTF-8 text; a manifest is a UTF-8 .jsonl or .csv file") from None
        rows: list[tuple[int, dict[str, Any]]] = []
        if self.path.suffix.lower() == ".csv":
            reader = csv.reader(text.splitlines())
            header = next(reader, None)
            if not header:
                return []
            for record in reader:
                if not any(cell.strip() for cell in record):
                    continue
                if len(record) != len(header):
                    rows.append((reader.line_num, {"__bad__": f"{len(record)} cells, the header has {len(header)}"}))
                else:
                    rows.append((reader.line_num, dict(zip(header, record))))
            return rows
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{self.path}:{number}: not a JSON line ({exc})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{self.path}:{number}: a manifest line is a JSON object of columns, not a "
                                     f"{type(row).__name__}")
                rows.append((number, row))
        return rows

    def _check_columns(self) -> None:
        """At least one column must name a modality, or no sample would hold anything: say which columns exist
        and the closest modality names."""
        seen = list(dict.fromkeys(c for _, row in self.items for c in row if c != "__bad__"))
        if any(self._target(c)[0] for c in seen):
            return
        names = modalities.names()
        hints = [f"{c!r} -> {m[0]!r}?" for c in seen
                 for m in [difflib.get_close_matches(c.lower().removesuffix("_file"), names, n=1, cutoff=0.6)] if m]
        raise ValueError(f"{self.path}: no column names a modality (columns: {', '.join(seen) or 'none'}; modalities: "
                         f"{', '.join(names)}, or <modality>_file for paths){'; ' + ', '.join(hints) if hints else ''}."
                         f" Rename the columns, or map them with columns={{'caption': 'text'}}")

    def _target(self, column: str) -> tuple[str | None, bool]:
        """(modality, is_file_column) for a column name, or (None, False) for metadata."""
        if not isinstance(column, str):
            return None, False
        if column in self.columns:
            column = self.columns[column]
        is_file = column.endswith("_file")
        name = column[: -len("_file")] if is_file else column
        return (name, is_file) if name in modalities.names() else (None, False)

    def decode(self, item: tuple[int, dict[str, Any]], skips: SkipLog, want: set[str] | None) -> dict[str, Any] | None:
        number, row = item
        where = f"{self.path}:{number}"
        if "__bad__" in row:
            skips.skip("ragged_row", where, f"row has {row['__bad__']}")
            return None
        sample: dict[str, Any] = {"__key__": f"{self.name}:{number}", "json": {}}
        for column, cell in row.items():
            name, is_file = self._target(column)
            if name is None:
                sample["json"][column] = cell
                continue
            if cell is None or cell == "" or (want is not None and name not in want):
                continue
            modality = modalities.get(name)
            if not is_file and modality.metadata.get("inline"):
                value = self._inline(modality, cell, where, skips)
                if value is not None:
                    sample[name] = value
                continue
            path = _resolve(self.root, str(cell))
            if not path.is_file():
                skips.skip("missing_file", where, f"column {column!r} points at missing file {path}")
                return None
            decoded = read_file(path, name, where, skips)
            if decoded is not None:
                sample[name] = decoded[1]
        label = sample["json"].get("label")
        if isinstance(label, int) or (isinstance(label, str) and label.lstrip("-").isdigit()):
            sample["label"] = int(label)
        return sample

    @staticmethod
    def _inline(modality: modalities.Modality, cell: Any, where: str, skips: SkipLog) -> Any:
        data = cell.encode("utf-8") if isinstance(cell, str) else json.dumps(cell).encode("utf-8")
        try:
            return modality.decode(data, modality.extensions[0])
        except DecodeError as exc:
            skips.skip(f"corrupt_{modality.name}", where, f"inline {modality.name}: {exc}")
            return None


class CocoSource(_ItemSource):
    """COCO-captions JSON (`images` with `file_name`, `annotations` with `image_id` and `caption`): one sample
    per image (text = its first caption, all captions in json) or, with `per="caption"`, one per caption. Image
    paths are relative to `image_root` (default: the JSON's folder)."""

    def __init__(self, path: str | os.PathLike, image_root: str | os.PathLike | None = None, per: str = "image",
                 items_per_unit: int = 256):
        super().__init__(items_per_unit)
        if per not in ("image", "caption"):
            raise ValueError(f"per must be 'image' or 'caption', not {per!r}")
        self.path = Path(path)
        self.name = self.path.name
        self.root = Path(image_root) if image_root is not None else self.path.parent
        data = read_json(self.path)
        if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
            raise ValueError(f"{self.path}: not COCO captions JSON (needs 'images' and 'annotations')")
        captions: dict[Any, list[str]] = defaultdict(list)
        for i, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
                raise ValueError(f"{self.path}: annotations[{i}] needs image_id and caption")
            captions[ann["image_id"]].append(str(ann["caption"]).strip())
        images = list(data["images"])  # file order: deterministic and what the user expects
        for i, image in enumerate(images):
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                raise ValueError(f"{self.path}: images[{i}] needs id and file_name")
        if per == "image":
            self.items = [(im, captions.get(im["id"], [])) for im in images]
        else:
            self.items = [(im, [c]) for im in images for c in captions.get(im["id"], [])]

    def decode(self, item: tuple[dict[str, Any], list[str]], skips: SkipLog, want: set[str] | None) -> dict[str, Any] | None:
        image, captions = item
        where = f"{self.path}:image {image['id']}"
        path = _resolve(self.root, image["file_name"])
        if not path.is_file():
            skips.skip("missing_file", where, f"image file {path} is missing")
            return None
        sample: dict[str, Any] = {"__key__": f"coco:{image['id']}", "json": {"image_id": image["id"],
                                                                             "file_name": image["file_name"],
                                                                             "captions": captions}}
        if want is None or "image" in want:
            decoded = read_file(path, "image", where, skips)
            if decoded is not None:
                sample["image"] = decoded[1]
        if captions and (want is None or "text" in want):
            sample["text"] = captions[0]
        return sample


class FolderSource(_ItemSource):
    """A folder of class subfolders (`root/cat/001.png`, `root/cat/001.txt`, ...): files sharing a stem form one
    sample, decoded by extension; the label is the class's index in sorted order. Files no modality claims are
    ignored."""

    def __init__(self, root: str | os.PathLike, items_per_unit: int = 256):
        super().__init__(items_per_unit)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: folder not found")
        self.name = self.root.name
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise ValueError(f"{self.root}: no class subfolders")
        groups: dict[tuple[int, str], list[Path]] = defaultdict(list)
        for label, name in enumerate(self.classes):
            for path in sorted((self.root / name).rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    stem, ext = split_key(str(path.relative_to(self.root)))
                    if modalities.for_extension(ext) is not None:
                        groups[(label, stem)].append(path)
        self.items = sorted(groups.items())

    def decode(self, item: tuple[tuple[int, str], list[Path]], skips: SkipLog, want: set[str] | None) -> dict[str, Any] | None:
        (label, stem), paths = item
        sample: dict[str, Any] = {"__key__": stem, "label": label, "json": {"class": self.classes[label]}}
        for path in paths:
            modality = modalities.for_extension(split_key(path.name)[1])
            if modality is None or modality.name in sample or (want is not None and modality.name not in want):
                continue
            decoded = read_file(path, modality.name, str(path), skips)
            if decoded is not None:
                sample[decoded[0]] = decoded[1]
        return sample


def open_source(spec: Any, **options: Any) -> Source:
    """Pick the reader from the path: `.jsonl`/`.csv` manifest, `.json` COCO captions, a folder holding `.tar`
    shards, a folder of class subfolders, else shard specs (globs, brace patterns, lists)."""
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".csv"):
            return ManifestSource(path, **options)
        if suffix == ".json":
            return CocoSource(path, **options)
        if path.is_dir() and not any(path.rglob("*.tar")):
            return FolderSource(path, **options)
    return ShardSource(spec)


def iter_source(source: Source, skips: SkipLog | None = None, want: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every decoded sample of a source, in order, in this process (no workers): the simple way to read one."""
    skips = skips or SkipLog()
    wanted = set(want) if want is not None else None
    for unit in range(len(source.units())):
        for item in source.raw(unit, skips):
            sample = source.decode(item, skips, wanted)
            if sample is not None:
                yield sample
