"""A persistent index of items of any modality in one model's shared space: metadata in SQLite (`items.sqlite`),
vectors in memory-mapped segment files, an HNSW graph past a size threshold. It records the model that built it
(source + fingerprint of its weights), its item count and a checksum, and refuses another model. Writes take a
lock, write new files, then commit one SQLite transaction: a writer killed half-way leaves the previous index."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sensorium.core.progress import progress_bar
from sensorium.data.shards import SkipLog
from sensorium.index.meta import Meta, Record
from sensorium.index.model import check_model, describe, load_embedder
from sensorium.index.sources import Item, iter_items, thumbnail
from sensorium.index.vectors import (ANN_THRESHOLD, Vectors, build_hnsw, sha256_file, write_ann, write_rows,
                                     write_segment)
from sensorium.inference import Embedder

FORMAT = 2  # 2: one HNSW graph per modality
DB = "items.sqlite"


class IndexStateError(ValueError):
    """Not an index, a damaged one, or one that refuses the request; the message says which and what to do."""


def is_index(root: str | Path) -> bool:
    return (Path(root) / DB).is_file()


def _checksum(segments: list[dict[str, Any]], ann: dict[str, Any] | None, count: int) -> str:
    graphs = (ann or {}).get("graphs", {})
    payload = json.dumps([[s["sha256"] for s in segments], {m: [g["sha256"], g["rows_sha256"]] for m, g in
                                                             sorted(graphs.items())}, count])
    return hashlib.sha256(payload.encode()).hexdigest()


class Index:
    """Open with `Index.open(dir)` (loads and checks the recorded model) or create with `Index.create(model, dir)`;
    `add(sources)`, `remove(ids)`, `search(...)` (see sensorium.index.search)."""

    def __init__(self, root: Path, meta: Meta, model: Embedder | None, readonly: bool):
        self.root, self.meta, self.model, self.readonly = root, meta, model, readonly
        self._load()

    # opening ----------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, model: str | Path | Embedder, root: str | Path, overwrite: bool = False,
               ann_threshold: int = ANN_THRESHOLD) -> Index:
        """A new empty index at `root` for `model`. An existing index is replaced only with `overwrite` (the new one
        is built beside it and swapped in by rename when `build` finishes)."""
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            if not is_index(root):
                raise IndexStateError(f"{root}: exists and is not an index; choose a new or empty folder")
            if not overwrite:
                raise IndexStateError(f"{root}: an index is already there; pass --overwrite to replace it, or "
                                  f"`sensorium index add {root} SOURCES...` to add to it")
        embedder, source = load_embedder(model)
        root.parent.mkdir(parents=True, exist_ok=True)
        target = root.parent / f".{root.name}.building-{uuid.uuid4().hex[:8]}"
        target.mkdir()
        meta = Meta(target / DB)
        meta.begin()
        meta.set_state(format=FORMAT, model=describe(embedder, source), count=0, generation=0, ann=None,
                       ann_threshold=int(ann_threshold), created=time.time(), updated=time.time(),
                       checksum=_checksum([], None, 0))
        meta.commit()
        index = cls(target, meta, embedder, readonly=False)
        index._final_root = root  # type: ignore[attr-defined]
        return index

    @classmethod
    def open(cls, root: str | Path, model: str | Path | Embedder | None = None, readonly: bool = True,
             load_model: bool = True) -> Index:
        """Open an index; its recorded model is loaded (or `model` is checked against the record)."""
        root = Path(root)
        if not is_index(root):
            hint = " (indexes made by older versions held embeddings.safetensors: rebuild with `sensorium index " \
                   "build`)" if (root / "embeddings.safetensors").exists() else ""
            raise FileNotFoundError(f"{root}: no index here{hint}; build one with `sensorium index build MODEL {root} "
                                    f"SOURCES...`")
        meta = Meta(root / DB, readonly=readonly)
        state = meta.state()
        if state.get("format") != FORMAT:
            raise IndexStateError(f"{root}: index format {state.get('format')!r}, this Sensorium reads {FORMAT}; rebuild it")
        embedder = None
        if model is not None or load_model:
            recorded = state["model"]
            try:
                embedder, _ = load_embedder(model if model is not None else recorded["source"])
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"{root}: the model this index was built with is gone ({exc}); pass it with "
                                        f"--model or rebuild the index") from None
            check_model(recorded, embedder, root)
        return cls(root, meta, embedder, readonly)

    def _load(self) -> None:
        self.state = self.meta.state()
        segments = self.meta.segments()
        if self.state["checksum"] != _checksum(segments, self.state.get("ann"), self.state["count"]):
            raise IndexStateError(f"{self.root}: checksum mismatch between the recorded state and its segments; the index "
                              "is damaged (rebuild it)")
        self.vectors = Vectors(self.root, self.dim, segments, self.state.get("ann"), readonly=self.readonly)
        rows, codes, names = self.meta.row_table()
        if len(rows) != self.state["count"]:
            raise IndexStateError(f"{self.root}: {len(rows)} items but the state records {self.state['count']}; the index is "
                              "damaged (rebuild it)")
        self.codes = np.full(self.vectors.nrows, -1, dtype=np.int16)
        self.codes[rows] = codes
        self.modality_names = names
        self._allowed_cache: dict[Any, Any] = {}

    def reload_if_changed(self) -> bool:
        """Re-read the index when another process committed a change (servers call this between requests)."""
        generation = self.meta.db.execute("SELECT value FROM state WHERE key='generation'").fetchone()
        if generation and json.loads(generation[0]) != self.state["generation"]:
            self._load()
            return True
        return False

    @property
    def dim(self) -> int:
        return int(self.state["model"]["dim"])

    @property
    def count(self) -> int:
        return int(self.state["count"])

    # writing ----------------------------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        if self.readonly:
            raise IndexStateError(f"{self.root}: opened read-only")
        with open(self.root / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.reload_if_changed()
            self.meta.begin()
            try:
                yield
                self.meta.commit()
            except BaseException:
                self.meta.rollback()
                raise
            finally:
                self._load()
                self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Delete vector/graph files no committed state refers to (left by replaced graphs or killed writers)."""
        graphs = (self.state.get("ann") or {}).get("graphs", {}).values()
        used = {s["file"] for s in self.meta.segments()} | {g[f] for g in graphs for f in ("file", "rows_file")}
        for path in self.root.iterdir():
            stale_tmp = path.name.startswith(".") and path.name.endswith(".tmp") and time.time() - path.stat().st_mtime > 3600
            if (path.name.startswith(("vectors-", "ann-")) and path.name not in used) or stale_tmp:
                path.unlink(missing_ok=True)

    def _commit_state(self, **changes: Any) -> None:
        segments = self.meta.segments()
        count = self.meta.count()
        ann = changes.get("ann", self.state.get("ann"))
        self.meta.set_state(count=count, generation=self.state["generation"] + 1, updated=time.time(),
                            checksum=_checksum(segments, ann, count), **changes)

    def add(self, sources: Sequence[str | os.PathLike], modalities: Iterable[str] | None = None, batch_size: int = 64,
            strict: bool = False, progress: bool = True) -> dict[str, Any]:
        """Embed and add every item of the sources (shards, manifests, folders, files); an item already in the index
        (same file or shard member) is updated in place and keeps its id. Returns counts and skips."""
        if self.model is None:
            raise IndexStateError(f"{self.root}: opened without its model; cannot embed new items")
        wanted = list(modalities or self.model.modalities)
        for m in wanted:
            self.model.check_modality(m)
        skips = SkipLog(strict=strict)
        report = {"added": {}, "updated": 0}
        with self._writing():
            rows: list[np.ndarray] = []
            next_row = self.vectors.nrows
            pending: dict[str, list[Item]] = {}

            def flush(modality: str) -> None:
                nonlocal next_row
                batch = pending.pop(modality, [])
                if not batch:
                    return
                vecs = self.model.embed(modality, [it.value for it in batch], batch_size=batch_size).numpy()
                for item in batch:
                    thumb = thumbnail(item.value) if modality == "image" and hasattr(item.value, "convert") else None
                    _, updated = self.meta.upsert(next_row, item.modality, item.locator, item.source, item.member,
                                                  item.title, item.text, item.meta, thumb)
                    report["updated"] += updated
                    if not updated:
                        report["added"][modality] = report["added"].get(modality, 0) + 1
                    next_row += 1
                rows.append(vecs.astype(np.float32))

            for item in progress_bar(iter_items(sources, wanted, skips), desc="indexing", unit="item",
                                     disable=not progress):
                pending.setdefault(item.modality, []).append(item)
                if len(pending[item.modality]) >= batch_size:
                    flush(item.modality)
            for modality in list(pending):
                flush(modality)
            if rows:
                self._append_segment(np.concatenate(rows))
            self._commit_state()
        report["skipped"] = skips.as_dict()
        self.update_graph(progress=progress)
        report["items"] = self.count
        return report

    def add_vectors(self, vectors: np.ndarray, items: Sequence[dict[str, Any]]) -> list[int]:
        """Add precomputed normalised vectors [n, dim] with their records (`modality`, `locator`, optional `title`,
        `meta`, `source`): how benchmarks add synthetic items and how other libraries' embeddings come in."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(items):
            raise ValueError(f"vectors {vectors.shape} do not match {len(items)} items of dim {self.dim}")
        ids = []
        with self._writing():
            start = self.vectors.nrows
            for i, item in enumerate(items):
                ids.append(self.meta.upsert(start + i, item["modality"], item["locator"], item.get("source"), None,
                                            item.get("title"), item.get("text"), item.get("meta", {}), None)[0])
            self._append_segment(vectors)
            self._commit_state()
        return ids

    def _append_segment(self, vectors: np.ndarray) -> None:
        name, digest = write_segment(self.root, vectors)
        self.meta.add_segment(name, self.vectors.nrows, len(vectors), digest)

    def update_graph(self, progress: bool = True, force: bool = False) -> bool:
        """Build or extend the HNSW graphs (one per modality) when the index has grown past the threshold, or when the
        rows added since the last graphs are many; a separate commit, so a kill here keeps the added items (they are
        searched exactly). Graphs with many removed rows are rebuilt from the live ones."""
        threshold = int(self.state.get("ann_threshold", ANN_THRESHOLD))
        ann = self.state.get("ann")
        covered = ann["covered"] if ann else 0
        fresh = self.vectors.nrows - covered
        dead = self.vectors.nrows - self.count
        if not force and (self.count < threshold or fresh <= max(threshold // 4, covered // 10)):
            return False
        with self._writing():
            rebuild = ann is None or dead > self.vectors.nrows // 4
            lo = 0 if rebuild else covered
            new_rows = np.arange(lo, self.vectors.nrows)
            new_rows = new_rows[self.codes[new_rows] >= 0]  # live rows only
            graphs = {} if rebuild else dict(ann["graphs"])
            bar = progress_bar(total=len(new_rows), desc="HNSW graphs", unit="vec", disable=not progress)
            for code, name in enumerate(self.modality_names):
                rows = new_rows[self.codes[new_rows] == code]
                if not len(rows):
                    continue
                old = None if rebuild else self.vectors.graphs.get(name)
                graph = build_hnsw(self.vectors, rows, base=old.index if old else None, progress=bar)
                all_rows = np.concatenate([old.rows, rows]) if old else rows
                file, digest = write_ann(self.root, graph)
                rows_file, rows_digest = write_rows(self.root, all_rows)
                graphs[name] = {"file": file, "sha256": digest, "rows_file": rows_file, "rows_sha256": rows_digest,
                                "count": int(len(all_rows))}
            bar.close()
            self._commit_state(ann={"kind": "hnsw", "covered": int(self.vectors.nrows), "graphs": graphs})
        return True

    def remove(self, ids: Iterable[int]) -> int:
        """Remove items by id; their vectors stay in the segments but are never returned again."""
        with self._writing():
            removed = self.meta.delete(ids)
            self._commit_state()
        return removed

    def finish(self) -> Index:
        """After `create` + `add`: move a replacement index into place (old one removed only after the swap)."""
        final = getattr(self, "_final_root", self.root)
        if final != self.root:
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            self.meta.close()
            if final.exists():
                os.replace(final, old)
            os.replace(self.root, final)
            shutil.rmtree(old, ignore_errors=True)
            self.root = final
            self.meta = Meta(final / DB)
            self._load()
        return self

    # reading ----------------------------------------------------------------------------------------------
    def get(self, item_id: int) -> Record | None:
        return self.meta.get(item_id)

    def vector(self, item_id: int) -> np.ndarray:
        record = self.meta.get(item_id)
        if record is None:
            raise KeyError(f"no item {item_id} in {self.root}")
        return self.vectors.gather(np.array([record.row]))[0]

    def info(self) -> dict[str, Any]:
        """Counts, model, files and sizes."""
        files = sorted(p for p in self.root.iterdir() if p.is_file())
        graphs = (self.state.get("ann") or {}).get("graphs", {})
        return {"root": str(self.root), "items": self.count, "by_modality": self.meta.counts(),
                "model": {k: v for k, v in self.state["model"].items()}, "dim": self.dim,
                "search": "hnsw" if graphs else "exact", "hnsw_rows": {m: g["count"] for m, g in graphs.items()},
                "vector_rows": self.vectors.nrows, "checksum": self.state["checksum"],
                "generation": self.state["generation"], "bytes": sum(p.stat().st_size for p in files),
                "ann_threshold": self.state.get("ann_threshold", ANN_THRESHOLD)}

    def verify(self) -> dict[str, Any]:
        """Re-hash every vector and graph file against the record; raises on a mismatch."""
        for seg in self.meta.segments():
            if sha256_file(self.root / seg["file"]) != seg["sha256"]:
                raise IndexStateError(f"{self.root / seg['file']}: contents changed since it was written (sha256 mismatch)")
        for graph in (self.state.get("ann") or {}).get("graphs", {}).values():
            for file, digest in ((graph["file"], graph["sha256"]), (graph["rows_file"], graph["rows_sha256"])):
                if sha256_file(self.root / file) != digest:
                    raise IndexStateError(f"{self.root / file}: contents changed since it was written (sha256 mismatch)")
        return {"verified": True, "checksum": self.state["checksum"], "items": self.count}


def build(model: str | Path | Embedder, root: str | Path, sources: Sequence[str | os.PathLike],
          modalities: Iterable[str] | None = None, overwrite: bool = False, batch_size: int = 64, strict: bool = False,
          progress: bool = True, ann_threshold: int = ANN_THRESHOLD) -> tuple[Index, dict[str, Any]]:
    """Create an index of `sources` embedded by `model`: the one call behind `sensorium index build`."""
    index = Index.create(model, root, overwrite=overwrite, ann_threshold=ann_threshold)
    try:
        report = index.add(sources, modalities, batch_size=batch_size, strict=strict, progress=progress)
    except BaseException:
        shutil.rmtree(index.root, ignore_errors=True)
        raise
    if index.count == 0:
        skipped = report["skipped"]
        shutil.rmtree(index.root, ignore_errors=True)
        raise IndexStateError(f"nothing to index in {', '.join(map(str, sources))}: no readable items of "
                          f"{', '.join(modalities or index.model.modalities)} ({skipped['total']} skipped)")
    return index.finish(), report


def sources_stamp(sources: Sequence[str | os.PathLike]) -> list[list[Any]]:
    """What the sources are now (every file under them: path, size, mtime), to tell a stale index from a current one."""
    stamp = []
    for source in sources:
        path = Path(source)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stamp += [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files if p.exists()]
    return stamp


def ensure(model: str | Path | Embedder, root: str | Path, sources: Sequence[str | os.PathLike],
           modalities: Iterable[str] | None = None, progress: bool = True) -> tuple[Index, bool]:
    """The index of `sources` by `model` at `root`: reused when it was built from the same files by the same model
    (same weights), rebuilt otherwise. Returns (index, rebuilt)."""
    embedder, _ = load_embedder(model)
    stamp = sources_stamp(sources)
    if is_index(root):
        try:
            index = Index.open(root, model=embedder)
            if index.state.get("sources_stamp") == stamp and index.count:
                return index, False
        except (ValueError, FileNotFoundError):
            pass  # another model, another format, damaged: rebuild below
    index, _ = build(embedder, root, sources, modalities=modalities, overwrite=True, progress=progress)
    with index._writing():
        index.meta.set_state(sources_stamp=stamp)
        index._commit_state()
    return index, True
