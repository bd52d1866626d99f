"""What a benchmark is made of, whatever file it came from: items (a question, its options, its media and its
answer), a task (items of one kind, the counted skips of reading them) and media kept as bytes or a path until
a model needs them, decoded through the modality registry."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensorium import modalities


@dataclass(frozen=True)
class Media:
    """One media item: raw bytes with their file extension (base64 cells, inline values) or a file path."""

    modality: str
    data: bytes = b""
    ext: str = ""
    path: str = ""

    def read(self) -> tuple[bytes, str]:
        """(bytes, extension) of the item."""
        if self.path:
            name = Path(self.path).name
            return Path(self.path).read_bytes(), (name.split(".", 1)[1] if "." in name else "").lower()
        return self.data, self.ext

    def value(self) -> Any:
        """The decoded value (RGB PIL image, waveform, clip, array ...); a DecodeError names the problem."""
        data, ext = self.read()
        found = modalities.for_extension(ext)
        if found is None or found.name != self.modality:
            raise modalities.DecodeError(f".{ext} is not {self.modality} data")
        try:
            return found.decode(data, ext)
        except modalities.DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a DecodeError naming the item
            raise modalities.DecodeError(f"cannot decode as {self.modality}: {type(exc).__name__}: {exc}") from None

    def key(self) -> str:
        """A content hash: items that show the same picture share it (MME pairs, embedding caches)."""
        if self.path:
            return f"path:{Path(self.path).resolve()}"
        return hashlib.sha1(self.data).hexdigest()[:16]

    def data_uri(self) -> str:
        """`data:...;base64,...` of the bytes (for writers and chat payloads)."""
        data, ext = self.read()
        return f"data:application/{ext};base64,{base64.b64encode(data).decode()}"


@dataclass
class Item:
    """One question (or one picture to caption / retrieve / classify). `options` maps keys (A, B, ... or class
    names) to text; `answer` is the right key (mcq), 'yes'/'no', or a reference text; `answers` holds several
    references (VQAv2's ten, captions). `group` ties items that must be right together (MME's two questions of
    one picture). `row` is the 1-based data line of the file, for messages."""

    index: str
    question: str = ""
    options: dict[str, str] = field(default_factory=dict)
    answer: str = ""
    answers: list[str] = field(default_factory=list)
    hint: str = ""
    category: str = ""
    l2: str = ""
    split: str = ""
    group: str = ""
    media: list[Media] = field(default_factory=list)
    row: int = 0

    @property
    def modalities(self) -> list[str]:
        """The media modalities this item needs, in order of first use."""
        return list(dict.fromkeys(m.modality for m in self.media))

    def references(self) -> list[str]:
        """Every reference answer (several for VQAv2 / captions, else the one answer)."""
        return list(self.answers) or ([self.answer] if self.answer else [])


@dataclass
class Task:
    """Items of one kind read from one file: `kind` is a key of bench.kinds.KINDS. `skipped` holds the counted
    skips of reading ({row, index, reason}); `priors` the path of training answers for the blind baselines."""

    name: str
    kind: str
    items: list[Item]
    source: str = ""
    skipped: list[dict[str, Any]] = field(default_factory=list)
    priors: str = ""
    extract: str = ""  # extraction rule for generated answers ("" = the kind's default)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def modalities(self) -> list[str]:
        """Every media modality some item needs."""
        return list(dict.fromkeys(m for item in self.items for m in item.modalities))
