"""Benchmark files read from local disk, in the community's formats, and written back in them.

Rows come from TSV (VLMEvalKit's layout: `index, image (base64) | image_path, question, hint, A..E, answer,
category, l2-category, split`), CSV, JSONL or a JSON list. Media columns follow the modality registry: a column
named after a modality holds base64 bytes (or, for inline modalities such as tabular, the value itself) and
`<modality>_path` a file path relative to the benchmark file; JSONL cells may hold lists. As in VLMEvalKit, an
image cell of at most 64 characters that names another row's index reuses that row's image. A missing column
is an error naming it and the file; an undecodable media cell is a counted skip naming the row (an error when
strict); an answer letter that is not one of the row's options is an error naming the row."""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import io
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from sensorium import modalities
from sensorium.eval.bench.items import Item, Media, Task
from sensorium.eval.bench.kinds import YES_NO, detect_kind, get_kind

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MISSING = {"", "nan", "none", "null"}


def _cell(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _present(value: Any) -> bool:
    return _cell(value).lower() not in MISSING


def read_rows(path: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of a TSV / CSV / JSONL / JSON-list file; columns in first-seen order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such benchmark file")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: unknown benchmark file type {suffix!r}; expected {', '.join(TABLE_SUFFIXES)}")
    text = path.read_text(encoding="utf-8-sig")
    if suffix in (".tsv", ".csv"):
        csv.field_size_limit(sys.maxsize)  # base64 images make long cells
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        rows = [dict(r) for r in reader]
        return list(reader.fieldnames or []), rows
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"{path} line {n}: not JSON ({exc})") from None
    else:
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise ValueError(f"{path}: a JSON benchmark is a list of rows")
    if any(not isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: every row must be an object")
    return list(dict.fromkeys(k for r in rows for k in r)), rows


def _cells(value: Any) -> list[str]:
    """A media cell -> its entries: a JSON list, a Python-literal list string ("['a.png', 'b.png']") or one."""
    if isinstance(value, (list, tuple)):
        return [_cell(v) for v in value if _present(v)]
    text = _cell(value)
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, list):
            return [_cell(v) for v in parsed if _present(v)]
    return [text] if _present(text) else []


def _media_columns(columns: Sequence[str]) -> list[tuple[str, str, bool]]:
    """(column, modality, is_path) for every media column, in the registry's modality order."""
    out = []
    for name in modalities.names():
        if name == "text":  # text is the question itself
            continue
        if name in columns:
            out.append((name, name, False))
        if f"{name}_path" in columns:
            out.append((f"{name}_path", name, True))
    return out


def _media(row: dict[str, Any], columns: list[tuple[str, str, bool]], base: Path, by_index: dict[str, dict[str, Any]],
           where: str) -> list[Media]:
    """The row's media, each decoded once to check it; a DecodeError names the column and what is wrong."""
    out = []
    for column, modality, is_path in columns:
        spec = modalities.get(modality)
        for entry in _cells(row.get(column)):
            if is_path:
                path = Path(entry) if Path(entry).is_absolute() else base / entry
                if not path.is_file():
                    raise modalities.DecodeError(f"{where}: {column} {entry!r} is not a file")
                media = Media(modality, path=str(path))
            elif spec.metadata.get("inline"):
                media = Media(modality, entry.encode(), spec.extensions[0])
            else:
                if len(entry) <= 64 and entry in by_index and by_index[entry] is not row:
                    entry = _cell(by_index[entry].get(column))  # VLMEvalKit: a short cell names the row holding it
                try:
                    data = base64.b64decode(entry, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise modalities.DecodeError(f"{where}: {column} is not valid base64 ({exc})") from None
                media = Media(modality, data, spec.extensions[0])
            try:
                media.value()
            except modalities.DecodeError as exc:
                raise modalities.DecodeError(f"{where}: {column}: {exc}") from None
            out.append(media)
    return out


def _references(row: dict[str, Any], single: str, several: str) -> list[str]:
    """The reference answers of a row: a list (or list string) in `several`, else the one in `single`."""
    for column in (several, single):
        value = row.get(column)
        if isinstance(value, list) or _present(value):
            refs = value if isinstance(value, list) else _cells(value) if column == several else [value]
            return [_cell(r) for r in refs if _present(r)]
    return []


def _build_item(kind: str, row: dict[str, Any], media: list[Media], n: int, where: str,
                classes: list[str]) -> Item:
    item = Item(index=_cell(row.get("index")) or str(n), question=_cell(row.get("question")),
                hint=_cell(row.get("hint")) if _present(row.get("hint")) else "",
                category=_cell(row.get("category")), l2=_cell(row.get("l2-category", row.get("l2_category"))),
                split=_cell(row.get("split")), media=media, row=n)
    if kind == "mcq":
        item.options = {c: _cell(row[c]) for c in LETTERS if c in row and _present(row[c])}
        if len(item.options) < 2:
            raise ValueError(f"{where}: fewer than two options ({', '.join(item.options) or 'none'})")
        item.answer = _cell(row.get("answer")).upper()
        if item.answer not in item.options:
            raise ValueError(f"{where}: answer {_cell(row.get('answer'))!r} is not one of the row's options "
                             f"({', '.join(item.options)})")
    elif kind == "yesno":
        said = _cell(row.get("answer")).lower().rstrip(".")
        if said not in YES_NO:
            raise ValueError(f"{where}: answer {_cell(row.get('answer'))!r} is not yes or no")
        item.options, item.answer = dict(YES_NO), said
    elif kind == "classification":
        item.answer = _cell(row.get("label"))
        if item.answer not in classes:
            raise ValueError(f"{where}: label {item.answer!r} is not one of the classes")
        item.options = {c: c for c in classes}
    elif kind == "vqa":
        item.answers = _references(row, "answer", "answers")
        item.answer = item.answers[0] if item.answers else ""
        if not item.answer:
            raise ValueError(f"{where}: no answer")
    else:  # caption, retrieval
        item.answers = _references(row, "caption", "captions")
        if not item.answers:
            raise ValueError(f"{where}: no caption")
    return item


def read_task(path: str | Path, kind: str | None = None, *, strict: bool = False, name: str | None = None,
              classes: Sequence[str] | None = None, priors: str = "", extract: str = "") -> Task:
    """Read a benchmark file into a Task (kind detected from the columns unless given). Rows with media that do
    not decode are counted skips naming the row (errors with `strict`); see the module doc for the rest."""
    path = Path(path)
    columns, rows = read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    kind = kind or detect_kind(columns, [r.get("answer", "") for r in rows], str(path))
    spec = get_kind(kind)
    for group in spec.required:
        if not any(c in columns for c in group):
            raise ValueError(f"{path}: missing column {' or '.join(repr(c) for c in group)} (a {kind} file needs "
                             f"{', '.join(' | '.join(g) for g in spec.required)})")
    media_cols = _media_columns(columns)
    if kind == "classification":
        classes = list(classes) if classes else sorted({_cell(r.get("label")) for r in rows if _present(r.get("label"))})
    by_index = {_cell(r.get("index")): r for r in rows}
    if len(by_index) != len(rows):
        dup = next(k for k, n in Counter(_cell(r.get("index")) for r in rows).items() if n > 1)
        raise ValueError(f"{path}: index {dup!r} appears more than once; every row needs its own index")
    items, skipped = [], []
    for n, row in enumerate(rows, start=1):
        where = f"{path} row {n} (index {_cell(row.get('index'))})"
        try:
            media = _media(row, media_cols, path.parent, by_index, where)
        except modalities.DecodeError as exc:
            if strict:
                raise ValueError(f"{exc} (without --strict it is skipped and counted)") from None
            skipped.append({"row": n, "index": _cell(row.get("index")), "reason": str(exc)})
            continue
        items.append(_build_item(kind, row, media, n, where, list(classes or [])))
    if kind == "yesno":
        for item in items:  # MME pairs the questions of one picture
            item.group = item.media[0].key() if item.media else item.index
    return Task(name or path.stem, kind, items, str(path), skipped, priors, extract)


def media_cell(media: Media) -> str:
    """Base64 text of a media item (for writing a TSV cell)."""
    return base64.b64encode(media.read()[0]).decode()


def write_rows(path: str | Path, rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write rows as TSV (VLMEvalKit's layout; absent options left empty) or JSONL, by the file's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    if path.suffix.lower() == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return path
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, delimiter="\t", lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r.get(c, "") for c in columns})
    path.write_text(buf.getvalue())
    return path
