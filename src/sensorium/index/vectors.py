"""The index's vectors: append-only segment files (float32 `.npy`, memory-mapped, never rewritten) and, past a size
threshold, one faiss HNSW graph per modality over the rows before `covered`. Search is exact for small indexes,
selective filters and rows added since the graphs were built; otherwise each modality's graph the filter allows is
searched (a bitmap of allowed positions when only some are) and the hits merged. Files are written under a temporary name, flushed and renamed: a reader never sees half a file."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sensorium.core.errors import require

# Measured on 2 cores (docs/serve.md, bench/serve.py): HNSW M=32, efConstruction=128 reaches recall@10 0.95 at
# efSearch 64 on clustered 512-d data at 100k and needs about 128 on harder data; a filter keeping a third of the rows
# needs about twice the beam.
HNSW_M = 32
EF_CONSTRUCTION = 128
EF_SEARCH = 192  # measured at 100k (bench/serve.py): recall@10 0.908 at 64, 0.947 at 128, 0.959 at 192, 0.973 at 256
ANN_THRESHOLD = 20_000  # fewer live rows: exact search (about 3 ms at 20k x 512 on one core)
# A filter keeping at most this many rows is searched exactly over its rows, gathered once and kept (within
# FILTER_CACHE_BYTES for all filters): HNSW with a selective filter needs a very wide beam and still loses recall.
EXACT_FILTER_ROWS = 32_768
FILTER_CACHE_BYTES = 512 * 2**20


_SEARCH = {"threads": None, "cached_bytes": 0}
_SELECTOR_LOCK = threading.Lock()
_LOCAL = threading.local()


def set_search_threads(n: int | None = 1) -> None:
    """OpenMP threads faiss may use per search, in every thread that searches (OpenMP keeps the setting per thread,
    so it is applied again in each server worker thread). 1 under concurrent single-query load: measured on 2 cores,
    more threads spin against each other and cut QPS by half or more."""
    _SEARCH["threads"] = n


def _apply_threads(faiss: Any) -> None:
    n = _SEARCH["threads"]
    if n and getattr(_LOCAL, "threads", None) != n:
        faiss.omp_set_num_threads(n)
        _LOCAL.threads = n


def faiss_module() -> Any:
    """faiss, or a clear error saying how to install it."""
    return require("faiss", "pip install faiss-cpu (or scripts/setup)")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_segment(root: Path, vectors: np.ndarray) -> tuple[str, str]:
    """Write float32 vectors [n, dim] as a new segment file; returns (file name, sha256 of the file)."""
    name = f"vectors-{uuid.uuid4().hex[:12]}.npy"
    tmp = root / f".{name}.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / name)
    _fsync_dir(root)
    return name, sha256_file(root / name)


def write_ann(root: Path, index: Any) -> tuple[str, str]:
    """Write a faiss index as a new file; returns (file name, sha256)."""
    faiss = faiss_module()
    name = f"ann-{uuid.uuid4().hex[:12]}.faiss"
    tmp = root / f".{name}.tmp"
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, root / name)
    _fsync_dir(root)
    return name, sha256_file(root / name)


@dataclass
class Allowed:
    """Rows a search may return: a boolean mask, its count, and (built on first ANN use) the packed bitmap and faiss
    selector. Built with numpy from cached arrays, once per distinct filter, never per query."""

    mask: np.ndarray
    count: int
    everything: bool = False
    _rows: np.ndarray | None = None

    def rows(self) -> np.ndarray:
        if self._rows is None:
            self._rows = np.flatnonzero(self.mask)
        return self._rows

    def matrix(self, vectors: Vectors) -> np.ndarray:
        """The allowed rows' vectors, gathered once and kept while the cache budget allows."""
        cached = getattr(self, "_matrix", None)
        if cached is not None:
            return cached
        matrix = vectors.gather(self.rows())
        with _SELECTOR_LOCK:
            if _SEARCH["cached_bytes"] + matrix.nbytes <= FILTER_CACHE_BYTES:
                _SEARCH["cached_bytes"] += matrix.nbytes
                self._matrix = matrix
        return matrix

    def __del__(self) -> None:
        cached = getattr(self, "_matrix", None)
        if cached is not None:
            _SEARCH["cached_bytes"] -= cached.nbytes

    def view(self, name: str, graph: "Graph") -> tuple[int, Any]:
        """(allowed rows in this graph, faiss selector over its positions or None when all are allowed), built once
        per filter and graph (under a lock: the selector points into the bitmap kept beside it)."""
        with _SELECTOR_LOCK:
            views = self.__dict__.setdefault("_views", {})
            if name not in views:
                keep = self.mask[graph.rows]
                count = int(keep.sum())
                selector = bitmap = None
                if 0 < count < len(graph.rows):
                    faiss = faiss_module()
                    bitmap = np.packbits(keep, bitorder="little")
                    selector = faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bitmap))
                views[name] = (count, selector, bitmap)
            count, selector, _ = views[name]
            return count, selector


def _knn(q: np.ndarray, block: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, rows) of queries q [m, dim] among the vectors `block` named `rows`, by faiss (SIMD, and its
    OpenMP threads per search thread; measured: numpy's threaded BLAS stalled 30 ms per product on a busy machine)."""
    k = min(k, len(block))
    if k == 0:
        return np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
    faiss = faiss_module()
    _apply_threads(faiss)
    scores, found = faiss.knn(q, np.ascontiguousarray(block, dtype=np.float32), k, metric=faiss.METRIC_INNER_PRODUCT)
    return scores.astype(np.float32), np.where(found >= 0, rows[np.maximum(found, 0)], -1)


def _merge(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    scores, rows = np.concatenate([a[0], b[0]], 1), np.concatenate([a[1], b[1]], 1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


@dataclass
class Graph:
    """One modality's HNSW graph and the vector rows its positions stand for."""

    index: Any
    rows: np.ndarray


class Vectors:
    """Read side of the vectors: memory-mapped segments plus one HNSW graph per modality over the rows before
    `covered` (a modality's vectors sit in their own region of the space: one graph with a modality filter loses most
    of the true neighbours, measured 0.30 recall@10 for a filter correlated with position)."""

    def __init__(self, root: Path, dim: int, segments: list[dict[str, Any]], ann: dict[str, Any] | None,
                 mmap: bool = True, readonly: bool = False):
        self.root, self.dim = root, dim
        self.parts: list[np.ndarray] = []
        self.starts: list[int] = []
        for seg in segments:
            path = root / seg["file"]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: vector segment missing; the index is damaged (rebuild it)")
            part = np.load(path, mmap_mode="r" if mmap else None)
            if part.shape != (seg["count"], dim) or part.dtype != np.float32:
                raise ValueError(f"{path}: holds {part.shape} {part.dtype}, the index expects ({seg['count']}, {dim}) "
                                 "float32; the index is damaged (rebuild it)")
            self.starts.append(seg["start"])
            self.parts.append(part)
        self.nrows = sum(len(p) for p in self.parts)
        self.ends = np.array([s + len(p) for s, p in zip(self.starts, self.parts)], dtype=np.int64)
        self.graphs: dict[str, Graph] = {}
        self.covered = int(ann["covered"]) if ann else 0
        for name, entry in (ann or {}).get("graphs", {}).items():
            path, rows_path = root / entry["file"], root / entry["rows_file"]
            if not path.is_file() or not rows_path.is_file():
                raise FileNotFoundError(f"{path}: HNSW file missing; the index is damaged (rebuild it)")
            # readers memory-map the graphs (faiss IO_FLAG_MMAP_IFC: vectors and links stay in the page cache, shared
            # between processes); writers load them into memory, since adding to a mapped graph aborts the process
            faiss = faiss_module()
            flags = faiss.IO_FLAG_MMAP_IFC if readonly and mmap else 0
            graph = Graph(faiss.read_index(str(path), flags), np.load(rows_path))
            if graph.index.ntotal != len(graph.rows) or len(graph.rows) != entry["count"]:
                raise ValueError(f"{path}: holds {graph.index.ntotal} vectors for {len(graph.rows)} rows, the index "
                                 f"expects {entry['count']}; the index is damaged (rebuild it)")
            self.graphs[name] = graph

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Vectors of the given rows [len(rows), dim] (float32 copies). Built by fancy indexing of each segment
        (measured: writing into a fresh np.empty was 50x slower here, page faults on the shared machine)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.empty((0, self.dim), np.float32)
        seg = np.searchsorted(self.ends, rows, side="right")
        if seg[0] == seg[-1] and (seg == seg[0]).all():
            return np.asarray(self.parts[seg[0]][rows - self.starts[seg[0]]])
        order = np.argsort(seg, kind="stable")
        bounds = np.flatnonzero(np.diff(seg[order])) + 1
        pieces = [np.asarray(self.parts[seg[group[0]]][rows[group] - self.starts[seg[group[0]]]])
                  for group in np.split(order, bounds)]
        return np.concatenate(pieces)[np.argsort(order, kind="stable")]

    def iter_range(self, lo: int, hi: int, chunk: int = 65536) -> Iterable[tuple[int, np.ndarray]]:
        """(first row, vectors) chunks covering rows [lo, hi)."""
        for start, part in zip(self.starts, self.parts):
            a, b = max(lo, start), min(hi, start + len(part))
            for s in range(a, b, chunk):
                e = min(b, s + chunk)
                yield s, np.asarray(part[s - start:e - start])

    def _exact_range(self, q: np.ndarray, k: int, lo: int, hi: int, allowed: Allowed) -> tuple[np.ndarray, np.ndarray]:
        best = (np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64))
        for start, block in self.iter_range(lo, hi):
            rows = np.arange(start, start + len(block))
            if not allowed.everything:
                keep = np.flatnonzero(allowed.mask[start:start + len(block)])
                block, rows = block[keep], rows[keep]
            if len(rows):
                best = _merge(best, _knn(q, block, rows, k), k)
        return best

    def _exact_rows(self, q: np.ndarray, k: int, allowed: Allowed) -> tuple[np.ndarray, np.ndarray]:
        return _knn(q, allowed.matrix(self), allowed.rows(), k)

    def search(self, q: np.ndarray, k: int, allowed: Allowed, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) [m, <=k] for normalised queries q [m, dim] among the allowed rows; rows are -1 where
        fewer than k rows are allowed."""
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1, self.dim)
        if allowed.count == 0 or k <= 0:
            return np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
        if not self.graphs or (not allowed.everything and allowed.count <= EXACT_FILTER_ROWS):
            if allowed.everything or allowed.count > self.nrows // 4:
                return self._exact_range(q, k, 0, self.nrows, allowed)
            return self._exact_rows(q, k, allowed)
        faiss = faiss_module()
        _apply_threads(faiss)
        ef = max(ef or EF_SEARCH, k)
        best = (np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64))
        views = {name: allowed.view(name, graph) for name, graph in self.graphs.items()}
        searched = [name for name, (count, _) in views.items() if count]
        if len(searched) > 1:  # the true top-k spreads over several graphs: half the beam in each (measured at 100k,
            ef = max(ef // 2, k)  # 3 graphs: recall@10 0.950 at 64, 0.974 at 128 each)
        for name in searched:
            graph, (count, selector) = self.graphs[name], views[name]
            if selector is None:
                params = faiss.SearchParametersHNSW(efSearch=ef)
            else:  # fewer allowed rows need a wider beam to find k of them (measured: 2x at a third of the rows)
                share = max(count / len(graph.rows), 1e-3)
                wide = int(min(1024, ef * max(1.0, min(8.0, 0.66 / share))))
                params = faiss.SearchParametersHNSW(efSearch=wide, sel=selector)
            scores, found = graph.index.search(q, k, params=params)
            rows = np.where(found >= 0, graph.rows[np.maximum(found, 0)], -1)
            best = _merge(best, (np.where(found >= 0, scores, -np.inf).astype(np.float32), rows), k)
        if self.nrows > self.covered:  # rows added since the graphs were built: exact
            best = _merge(best, self._exact_range(q, k, self.covered, self.nrows, allowed), k)
        return best


def build_hnsw(vectors: Vectors, rows: np.ndarray, base: Any = None, progress: Any = None) -> Any:
    """An HNSW graph (inner product) over the given rows, appended to `base` when given."""
    faiss = faiss_module()
    index = base
    if index is None:
        index = faiss.IndexHNSWFlat(vectors.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
    for start in range(0, len(rows), 16384):
        block = vectors.gather(rows[start:start + 16384])
        index.add(np.ascontiguousarray(block))
        if progress is not None:
            progress.update(len(block))
    return index


def write_rows(root: Path, rows: np.ndarray) -> tuple[str, str]:
    """Write a graph's row numbers beside it; returns (file name, sha256)."""
    name = f"ann-{uuid.uuid4().hex[:12]}.rows.npy"
    tmp = root / f".{name}.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, np.asarray(rows, dtype=np.int64))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / name)
    return name, sha256_file(root / name)
