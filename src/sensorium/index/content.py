"""An item's content, read from where the index recorded it: its file, or its member of a WebDataset shard (found
through a cached member table, so a read seeks instead of scanning the tar). Only locations the index recorded are
ever opened; an id never becomes a path."""

from __future__ import annotations

import mimetypes
import tarfile
import threading
from collections import OrderedDict
from pathlib import Path

from sensorium.index.meta import Record

_MIME = {"txt": "text/plain; charset=utf-8", "text": "text/plain; charset=utf-8", "caption": "text/plain; charset=utf-8",
         "wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg", "npy": "application/octet-stream",
         "json": "application/json"}


class ContentError(FileNotFoundError):
    """The recorded content of an item is gone or unreadable; the message names it."""


class TarMembers:
    """Byte ranges of shard members by name, for a few recently used shards."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self._cache: OrderedDict[tuple[str, float], dict[str, tuple[int, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def locate(self, shard: str, member: str) -> tuple[int, int]:
        path = Path(shard)
        try:
            key = (shard, path.stat().st_mtime)
        except OSError as exc:
            raise ContentError(f"{shard}: shard is gone ({exc.strerror})") from None
        with self._lock:
            table = self._cache.get(key)
            if table is not None:
                self._cache.move_to_end(key)
        if table is None:
            try:
                with tarfile.open(path, "r:") as tar:
                    table = {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
            except (tarfile.TarError, OSError) as exc:
                raise ContentError(f"{shard}: not a readable uncompressed tar ({exc})") from None
            with self._lock:
                self._cache[key] = table
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        if member not in table:
            raise ContentError(f"{shard}: member {member} is gone")
        return table[member]


MEMBERS = TarMembers()


def mime_type(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _MIME.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def read_content(record: Record) -> tuple[bytes, str]:
    """(bytes, MIME type) of an item's content."""
    if record.source is None:
        raise ContentError(f"item {record.id}: no content recorded")
    if record.member:
        offset, size = MEMBERS.locate(record.source, record.member)
        with open(record.source, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
        if len(data) != size:
            raise ContentError(f"{record.source}: member {record.member} is truncated")
        return data, mime_type(record.member)
    if "#" in record.locator and record.text is not None:  # inline text of a manifest cell
        return record.text.encode("utf-8"), _MIME["txt"]
    path = Path(record.source)
    try:
        return path.read_bytes(), mime_type(path.name)
    except OSError as exc:
        raise ContentError(f"{path}: content of item {record.id} is unreadable ({exc.strerror})") from None
