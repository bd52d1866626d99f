"""Search an index with a query of any modality: text, an image or audio (embedded by the index's model), a vector,
or an item already in the index. Filters on modality and metadata become boolean row masks built with numpy once
per distinct filter and cached until the index changes; a query never builds a Python list of candidates."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sensorium import modalities
from sensorium.index.meta import Record, check_key
from sensorium.index.store import Index
from sensorium.index.vectors import Allowed
from sensorium.inference.items import ItemError

MAX_K = 1000
CACHE = 256
_CACHE_LOCK = threading.Lock()


@dataclass
class Hit:
    """One result: the item's id, its cosine similarity to the query and its record."""

    id: int
    score: float
    record: Record

    def public(self) -> dict[str, Any]:
        return {**self.record.public(), "score": round(self.score, 6)}


def parse_where(pairs: Sequence[str] | Mapping[str, Any] | None) -> dict[str, str]:
    """`["category=animals", ...]` or a dict -> {key: value} (values compared as text)."""
    if not pairs:
        return {}
    if isinstance(pairs, Mapping):
        items = list(pairs.items())
    else:
        items = []
        for pair in pairs:
            if "=" not in pair:
                raise ValueError(f"where: {pair!r} is not key=value")
            items.append(tuple(pair.split("=", 1)))
    out = {}
    for key, value in items:
        if isinstance(value, (dict, list)):
            raise ValueError(f"where.{key}: filter values are strings or numbers")
        out[check_key(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def allowed(index: Index, modality: str | None = None, where: Mapping[str, str] | None = None) -> Allowed:
    """The rows a search may return: live items, of `modality`, whose metadata matches every `where` pair."""
    key = (index.state["generation"], modality, tuple(sorted((where or {}).items())))
    cache = index._allowed_cache
    if key in cache:
        return cache[key]
    if modality is not None and modality not in modalities.names():
        have = ", ".join(index.meta.counts()) or "nothing yet"
        raise ValueError(f"modality: unknown modality {modality!r}; this index holds {have}")
    mask = index.codes >= 0
    if modality is not None:
        code = index.modality_names.index(modality) if modality in index.modality_names else -2
        mask = index.codes == code
    for k, v in (where or {}).items():
        rows = index.meta.rows_where(k, v)
        keep = np.zeros(len(mask), dtype=bool)
        keep[rows[rows < len(mask)]] = True
        mask &= keep
    count = int(mask.sum())
    result = Allowed(mask, count, everything=count == index.vectors.nrows)
    with _CACHE_LOCK:
        while len(cache) >= CACHE:
            cache.pop(next(iter(cache)))
        cache[key] = result
    return result


def query_vector(index: Index, query: Any) -> np.ndarray:
    """A query -> its normalised vector [dim]. Queries: a string (text), `{"text": ...}`, `{"image": path | bytes |
    data URI | PIL}`, `{"audio": path | bytes | data URI}`, any modality the model embeds, `{"embedding": [...]}` or
    `{"id": item id}` (search by an indexed item)."""
    if isinstance(query, str):
        query = {"text": query}
    if not isinstance(query, Mapping) or len(query) != 1:
        raise ItemError("query: give a string, or an object with one of text, image, audio (or another modality the "
                        "model embeds), embedding, id")
    (kind, value), = query.items()
    if kind == "embedding":
        try:
            vec = np.asarray(value, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise ItemError("query.embedding: must be a list of numbers") from None
        if len(vec) != index.dim or not np.isfinite(vec).all() or not np.linalg.norm(vec) > 0:
            raise ItemError(f"query.embedding: needs {index.dim} finite numbers, not all zero (got {len(vec)})")
        return vec / np.linalg.norm(vec)
    if kind == "id":
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
            raise ItemError(f"query.id: {value!r} is not an item id")
        try:
            return index.vector(int(value))
        except KeyError:
            raise LookupError(f"query.id: no item {value} in this index") from None
    if index.model is None:
        raise ValueError("this index was opened without its model: only embedding and id queries work")
    if kind not in modalities.names():
        raise ItemError(f"query: unknown key {kind!r} (text, {', '.join(index.model.modalities)}, embedding, id)")
    index.model.check_modality(kind)
    if kind == "text" and (not isinstance(value, str) or not value.strip()):
        raise ItemError("query.text: empty text")
    try:
        return index.model.embed(kind, [value])[0].numpy()
    except ItemError as exc:
        raise ItemError(f"query.{kind}: {exc}") from None


def search_vectors(index: Index, vectors: np.ndarray, k: int = 10, modality: str | None = None,
                   where: Mapping[str, str] | None = None, ef: int | None = None) -> list[list[Hit]]:
    """Top-k hits for each of several query vectors [m, dim]; `ef`: HNSW beam width (default EF_SEARCH; wider is
    slower and finds more of the true top-k)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValueError(f"k={k!r}: must be an integer in [1, {MAX_K}]")
    scores, rows = index.vectors.search(np.asarray(vectors, np.float32), int(k), allowed(index, modality, where), ef)
    records = index.meta.by_rows(np.unique(rows[rows >= 0]))
    return [[Hit(records[r].id, float(s), records[r]) for s, r in zip(srow, rrow) if r >= 0 and r in records]
            for srow, rrow in zip(scores, rows)]


def search(index: Index, query: Any, k: int = 10, modality: str | None = None,
           where: Sequence[str] | Mapping[str, Any] | None = None) -> list[Hit]:
    """Top-k items for one query of any kind (see `query_vector`), optionally of one modality and matching metadata:
    the one function behind `sensorium search`, the server's /v1/search and the Python API."""
    where = parse_where(where)
    allowed(index, modality, where)  # validate the filter before paying for an embedding
    return search_vectors(index, query_vector(index, query)[None], k, modality, where)[0]
