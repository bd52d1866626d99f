"""The index's metadata in SQLite: one row per item (stable integer id, modality, where its content lives, a title,
JSON metadata, a thumbnail), the vector segments and the index state. Every write is one transaction, so a process
killed half-way leaves the previous index as it was."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (seq INTEGER PRIMARY KEY, file TEXT NOT NULL, start INTEGER NOT NULL,
                                     count INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    row INTEGER NOT NULL UNIQUE,        -- the item's vector: row of the concatenated segments
    modality TEXT NOT NULL,
    locator TEXT NOT NULL UNIQUE,       -- what the item is (file, shard member, manifest cell): re-adding updates it
    source TEXT,                        -- absolute path of the file, shard or manifest holding the content
    member TEXT,                        -- tar member name (key.ext) for shard items
    title TEXT,                         -- caption / file name shown with a hit
    text TEXT,                          -- full text of text items
    meta TEXT NOT NULL DEFAULT '{}'     -- JSON object; filters read it with json_extract
);
CREATE INDEX IF NOT EXISTS items_modality ON items(modality);
CREATE TABLE IF NOT EXISTS thumbs (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""
KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
FIELDS = ("id", "row", "modality", "locator", "source", "member", "title", "text", "meta")


@dataclass
class Record:
    """One item as stored: what a search hit and /v1/items/{id} return."""

    id: int
    row: int
    modality: str
    locator: str
    source: str | None
    member: str | None
    title: str | None
    text: str | None
    meta: dict[str, Any]

    def public(self) -> dict[str, Any]:
        """The item as users see it (no internal row number)."""
        out = {"id": self.id, "modality": self.modality, "title": self.title, "metadata": self.meta,
               "source": self.source}
        if self.member:
            out["member"] = self.member
        if self.text is not None:
            out["text"] = self.text
        return out


def _record(row: tuple) -> Record:
    values = dict(zip(FIELDS, row))
    values["meta"] = json.loads(values["meta"] or "{}")
    return Record(**values)


def check_key(key: str) -> str:
    """A metadata key usable in a filter: letters, digits, `_`, `.`, `-` (a dotted key reads a nested field)."""
    if not isinstance(key, str) or not KEY.match(key):
        raise ValueError(f"where: bad metadata key {key!r} (letters, digits, _ . - only)")
    return key


class Meta:
    """The SQLite side of an index. `readonly` opens with `mode=ro` (servers and searches never write)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30)
        self.lock = threading.RLock()  # servers read from many threads through this one connection
        self.db.execute("PRAGMA foreign_keys=ON")
        if not readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # state ------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM state")}

    def set_state(self, **values: Any) -> None:
        self.db.executemany("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)",
                            [(k, json.dumps(v)) for k, v in values.items()])

    # transactions -----------------------------------------------------------------------------------------
    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    # segments ---------------------------------------------------------------------------------------------
    def segments(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT seq, file, start, count, sha256 FROM segments ORDER BY seq")
        return [dict(zip(("seq", "file", "start", "count", "sha256"), r)) for r in cur]

    def add_segment(self, file: str, start: int, count: int, sha256: str) -> None:
        self.db.execute("INSERT INTO segments(file, start, count, sha256) VALUES (?, ?, ?, ?)",
                        (file, start, count, sha256))

    def replace_segments(self, segments: list[dict[str, Any]]) -> None:
        self.db.execute("DELETE FROM segments")
        for s in segments:
            self.add_segment(s["file"], s["start"], s["count"], s["sha256"])

    # items ------------------------------------------------------------------------------------------------
    def upsert(self, row: int, modality: str, locator: str, source: str | None, member: str | None,
               title: str | None, text: str | None, meta: dict[str, Any], thumb: bytes | None) -> tuple[int, bool]:
        """Insert an item, or point an existing locator at its new vector row keeping its id; (id, was_update)."""
        found = self.db.execute("SELECT id FROM items WHERE locator = ?", (locator,)).fetchone()
        meta_json = json.dumps(meta, sort_keys=True, default=str)
        if found:
            item_id = found[0]
            self.db.execute("UPDATE items SET row=?, modality=?, source=?, member=?, title=?, text=?, meta=? "
                            "WHERE id=?", (row, modality, source, member, title, text, meta_json, item_id))
        else:
            item_id = self.db.execute("INSERT INTO items(row, modality, locator, source, member, title, text, meta) "
                                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                      (row, modality, locator, source, member, title, text, meta_json)).lastrowid
        if thumb is not None:
            self.db.execute("INSERT OR REPLACE INTO thumbs(id, data) VALUES (?, ?)", (item_id, thumb))
        return item_id, bool(found)

    def delete(self, ids: Iterable[int]) -> int:
        ids = [int(i) for i in ids]
        removed = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            self.db.execute(f"DELETE FROM thumbs WHERE id IN ({marks})", chunk)
            removed += self.db.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk).rowcount
        return removed

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.db.execute("SELECT modality, COUNT(*) FROM items GROUP BY modality ORDER BY modality"))

    def get(self, item_id: int) -> Record | None:
        with self.lock:
            row = self.db.execute(f"SELECT {', '.join(FIELDS)} FROM items WHERE id = ?", (int(item_id),)).fetchone()
        return _record(row) if row else None

    def by_rows(self, rows: Iterable[int]) -> dict[int, Record]:
        rows = [int(r) for r in rows]
        if not rows:
            return {}
        with self.lock:
            found = self.db.execute(f"SELECT {', '.join(FIELDS)} FROM items WHERE row IN ({','.join('?' * len(rows))})",
                                    rows).fetchall()
        return {r.row: r for r in map(_record, found)}

    def thumb(self, item_id: int) -> bytes | None:
        with self.lock:
            found = self.db.execute("SELECT data FROM thumbs WHERE id = ?", (int(item_id),)).fetchone()
        return found[0] if found else None

    def row_table(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(rows, modality codes, modality names) of every live item: the arrays searches mask with."""
        names = [m for (m,) in self.db.execute("SELECT DISTINCT modality FROM items ORDER BY modality")]
        code = {m: i for i, m in enumerate(names)}
        cur = self.db.execute("SELECT row, modality FROM items")
        pairs = cur.fetchall()
        rows = np.fromiter((r for r, _ in pairs), dtype=np.int64, count=len(pairs))
        codes = np.fromiter((code[m] for _, m in pairs), dtype=np.int16, count=len(pairs))
        return rows, codes, names

    def rows_where(self, key: str, value: str) -> np.ndarray:
        """Rows of the items whose metadata `key` equals `value` (compared as text)."""
        path = "$." + check_key(key)
        with self.lock:
            found = self.db.execute("SELECT row FROM items WHERE CAST(json_extract(meta, ?) AS TEXT) = ?",
                                    (path, str(value))).fetchall()
        return np.fromiter((r for (r,) in found), dtype=np.int64, count=len(found))

    def ids_where(self, key: str, value: str) -> list[int]:
        path = "$." + check_key(key)
        return [i for (i,) in self.db.execute("SELECT id FROM items WHERE CAST(json_extract(meta, ?) AS TEXT) = ?",
                                              (path, str(value)))]

    def ids_of_source(self, source: str) -> list[int]:
        return [i for (i,) in self.db.execute("SELECT id FROM items WHERE source = ? OR source LIKE ?",
                                              (source, source.rstrip("/") + "/%"))]

    def ids_to_rows(self, ids: Iterable[int]) -> dict[int, int]:
        ids = [int(i) for i in ids]
        out: dict[int, int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            out.update(self.db.execute(f"SELECT id, row FROM items WHERE id IN ({','.join('?' * len(chunk))})",
                                       chunk))
        return out

    def iter_rows(self) -> Iterator[tuple[int, int]]:
        yield from self.db.execute("SELECT id, row FROM items ORDER BY row")

    def renumber(self, mapping: dict[int, int]) -> None:
        """Give items new vector rows after a compaction (old row -> new row), in two passes to keep rows unique."""
        self.db.executemany("UPDATE items SET row = ? WHERE row = ?", [(-1 - new, old) for old, new in mapping.items()])
        self.db.execute("UPDATE items SET row = -1 - row WHERE row < 0")
