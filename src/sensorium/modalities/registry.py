"""The modality registry: every modality is declared once (name, file extensions, decode/encode) and
everything downstream (shards, features, models, losses, metrics) looks it up here by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


class DecodeError(ValueError):
    """Raw bytes could not be turned into a modality value; the message names the source and the problem."""


@dataclass(frozen=True)
class Modality:
    """One modality: how its raw bytes are stored in shards/files and what Python value they decode to.

    `decode(data, ext)` turns the bytes of a file/shard member into a value (str, PIL image, waveform...);
    `encode(value)` returns `(ext, bytes)` for writing. `default_tower` names the packaged encoder used
    when a recipe does not say otherwise. `to_tensor(value)` (optional) gives the tensor that batches stack
    (values without it are batched as lists); `preview(value)` (optional) draws a small PIL image for contact
    sheets. Extensions may have several parts (`depth.png`): the longest registered suffix of a member's
    extension wins, so `x.depth.png` is depth while `x.png` stays an image.
    `metadata["inline"]` marks modalities whose value may sit inside a manifest cell instead of a file.
    `tokenizer` names the kind of `sensorium.nn.tokenizers` module that turns a batch of this modality into
    tokens for a unified transformer (`metadata["tokenizer_options"]` holds its default options).
    """

    name: str
    extensions: tuple[str, ...]
    decode: Callable[[bytes, str], Any]
    encode: Callable[[Any], tuple[str, bytes]]
    default_tower: str | None = None
    description: str = ""
    to_tensor: Callable[[Any], Any] | None = None
    preview: Callable[[Any], Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None


_REGISTRY: dict[str, Modality] = {}


def register(modality: Modality, *, replace: bool = False) -> Modality:
    """Add a modality; extensions must not collide with another modality's."""
    if modality.name in _REGISTRY and not replace:
        raise ValueError(f"modality {modality.name!r} is already registered")
    for other in _REGISTRY.values():
        if other.name == modality.name:
            continue
        clash = set(other.extensions) & set(modality.extensions)
        if clash:
            raise ValueError(f"extensions {sorted(clash)} of {modality.name!r} already belong to {other.name!r}")
    _REGISTRY[modality.name] = modality
    return modality


def get(name: str) -> Modality:
    """Look a modality up by name, with an error that lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown modality {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    """Registered modality names, in registration order."""
    return list(_REGISTRY)


def for_extension(ext: str) -> Modality | None:
    """The modality claiming `ext` (without dot, case-insensitive), trying the full multi-part extension first
    and then ever shorter suffixes (`a.depth.png` -> `depth.png` -> `png`), or None."""
    parts = ext.lower().lstrip(".").split(".")
    for start in range(len(parts)):
        suffix = ".".join(parts[start:])
        for modality in _REGISTRY.values():
            if suffix in modality.extensions:
                return modality
    return None


def decode_member(ext: str, data: bytes, source: str = "") -> tuple[str, Any] | None:
    """Decode one shard member / file by extension into `(modality_name, value)`; None if no modality claims it."""
    modality = for_extension(ext)
    if modality is None:
        return None
    try:
        return modality.name, modality.decode(data, ext.lower())
    except DecodeError as exc:
        raise DecodeError(f"{source}: {exc}" if source else str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure becomes a named DecodeError
        where = f"{source}: " if source else ""
        raise DecodeError(f"{where}cannot decode .{ext} as {modality.name}: {type(exc).__name__}: {exc}") from None
