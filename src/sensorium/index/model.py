"""Which model built an index: where it was loaded from, what it is, and a fingerprint (SHA-256 of every weight and
buffer it holds, in name order) so an index refuses to be searched with vectors of another model."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from sensorium.inference import Embedder, load
from sensorium.inference.load import PACKAGED, resolve


def _modules(embedder: Embedder) -> dict[str, torch.nn.Module]:
    """Every torch module the embedder holds (its model, towers, ...), by attribute path."""
    found: dict[str, torch.nn.Module] = {}

    def visit(name: str, value: Any, depth: int) -> None:
        if isinstance(value, torch.nn.Module):
            found[name] = value
        elif isinstance(value, dict) and depth < 2:
            for key, item in value.items():
                visit(f"{name}.{key}", item, depth + 1)
        elif depth < 1 and hasattr(value, "__dict__") and not isinstance(value, (type, str, Path, torch.device)):
            for key, item in vars(value).items():
                visit(f"{name}.{key}", item, depth + 1)

    for key, value in sorted(vars(embedder).items()):
        visit(key, value, 0)
    return found


def fingerprint(embedder: Embedder) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of every tensor of every module the embedder holds (cached
    on the embedder: inference models do not change their weights)."""
    cached = getattr(embedder, "_fingerprint", None)
    if cached:
        return cached
    digest = hashlib.sha256(type(embedder).__name__.encode())
    for prefix, module in sorted(_modules(embedder).items()):
        for name, tensor in sorted(module.state_dict(keep_vars=False).items()):
            if not isinstance(tensor, torch.Tensor):
                continue
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{prefix}.{name}:{tuple(t.shape)}:{t.dtype}".encode())
            if t.numel():
                digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
    embedder._fingerprint = digest.hexdigest()  # type: ignore[attr-defined]
    return embedder._fingerprint  # type: ignore[attr-defined]


def source_of(model: str | Path) -> str:
    """How to find the model again: its packaged name, or its absolute directory."""
    text = str(model)
    _, name = resolve(text)
    if name in PACKAGED and not Path(text).exists():
        return name
    return str(Path(text).expanduser().resolve())


def describe(embedder: Embedder, source: str) -> dict[str, Any]:
    """What an index records about its model."""
    if not isinstance(embedder, Embedder):
        raise ValueError(f"{source}: a {getattr(embedder, 'kind', type(embedder).__name__)} model cannot build an index; "
                         "give an embedding model (a composer / CLIP / unified run, or 'default')")
    return {"source": source, "name": embedder.name, "class": type(embedder).__name__, "dim": embedder.dim,
            "modalities": list(embedder.modalities), "fingerprint": fingerprint(embedder)}


_LOADED: dict[tuple, Embedder] = {}


def _stamp(source: str) -> tuple:
    """What identifies a model directory's current files (names, sizes, mtimes), to reuse a loaded copy."""
    root, _ = resolve(source)
    files = [p for d in (root, root / "model") if d.is_dir() for p in d.iterdir() if p.is_file()]
    return (source, *sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


def load_embedder(model: str | Path | Embedder) -> tuple[Embedder, str]:
    """(embedder, recorded source) for a model name/path or an already loaded embedder. A model loaded before in
    this process is reused while its files are unchanged (opening several indexes loads the towers once)."""
    if isinstance(model, Embedder):
        return model, getattr(model, "source", None) or model.name
    stamp = _stamp(source_of(model))
    if stamp in _LOADED:
        return _LOADED[stamp], stamp[0]
    loaded = load(model)
    if not isinstance(loaded, Embedder):
        raise ValueError(f"{model}: a {loaded.kind} model cannot embed items for an index; give an embedding model "
                         "(a composer / CLIP / unified run, or 'default')")
    source = source_of(model)
    loaded.source = source  # type: ignore[attr-defined]
    if len(_LOADED) >= 4:
        _LOADED.pop(next(iter(_LOADED)))
    _LOADED[stamp] = loaded
    return loaded, source


def check_model(recorded: dict[str, Any], embedder: Embedder, where: Path) -> None:
    """Refuse an embedder that is not the one the index was built with, naming both."""
    found = fingerprint(embedder)
    if found != recorded["fingerprint"] or embedder.dim != recorded["dim"]:
        raise ValueError(f"{where}: this index was built with {recorded['source']} (fingerprint "
                         f"{recorded['fingerprint'][:12]}, dim {recorded['dim']}), not with {embedder.name} "
                         f"(fingerprint {found[:12]}, dim {embedder.dim}); search it with its own model or rebuild it "
                         f"with `sensorium index build MODEL {where} SOURCES... --overwrite`")
