"""One entry point for checkpoint directories: `load_pretrained(path)` recognizes the format from the
config *contents* (never the folder name) and returns Sensorium's own module with its preprocessing;
`export_pretrained` writes a directory the original library loads. Families register themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from sensorium.core.files import CheckpointError, read_json
from sensorium.interop.preprocess import ImageProcessor, LogMel, TextTokenizer


@dataclass
class Pretrained:
    """A loaded checkpoint: Sensorium module, its preprocessing, and where it came from."""

    model: nn.Module
    family: str
    source: str
    image: ImageProcessor | None = None
    text: TextTokenizer | None = None
    audio: LogMel | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the source library's config, for reference

    def info(self) -> dict[str, Any]:
        """A JSON-friendly summary (family, parameter count, preprocessing)."""
        return {"family": self.family, "source": self.source, "class": type(self.model).__name__,
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "image": vars(self.image) if self.image else None,
                "text": {"max_length": self.text.max_length, "pad_id": self.text.pad_id,
                         "vocab_size": self.text.tokenizer.get_vocab_size()} if self.text else None,
                "audio": vars(self.audio) if self.audio else None}


@dataclass
class Family:
    """How to recognize, load and export one checkpoint family."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, bool], Pretrained]
    export: Callable[[Pretrained, Path], None] | None = None
    model_class: type | None = None  # what `export` accepts


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add a checkpoint family to the registry (called at import by each family module)."""
    FAMILIES[family.name] = family
    return family


def hf_model_type(root: Path) -> str | None:
    """`model_type` of a HF `config.json` in `root`, or None when there is none."""
    path = root / "config.json"
    return read_json(path).get("model_type") if path.is_file() else None


def detect_family(path: str | Path) -> Family:
    """The family whose files and config fields match `path`; a clear error otherwise."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a checkpoint directory")
    for family in FAMILIES.values():
        if family.detect(root):
            return family
    if (root / "config.json").is_file():
        cfg = read_json(root / "config.json")
        raise CheckpointError(f"{root / 'config.json'}: unknown architecture (model_type={cfg.get('model_type')!r}, "
                              f"architectures={cfg.get('architectures')}); supported families: {', '.join(FAMILIES)}")
    raise CheckpointError(f"{root}: no config.json (HF or Sensorium layout) or open_clip_config.json (open_clip "
                          f"layout)")


def load_pretrained(path: str | Path, allow_pickle: bool = False) -> Pretrained:
    """Load a local checkpoint directory into Sensorium's modules (pickle `.bin` only if allowed)."""
    family = detect_family(path)
    return family.load(Path(path), allow_pickle)


def export_pretrained(pretrained: Pretrained, out: str | Path, family: str | None = None) -> Path:
    """Write `pretrained` in `family`'s layout (default: its own) to directory `out`."""
    name = family or pretrained.family
    if name not in FAMILIES or FAMILIES[name].export is None:
        raise ValueError(f"no exporter for family {name!r}; exportable: "
                         f"{', '.join(n for n, f in FAMILIES.items() if f.export)}")
    target = FAMILIES[name]
    if target.model_class is not None and not isinstance(pretrained.model, target.model_class):
        raise ValueError(f"cannot export a {pretrained.family} model ({type(pretrained.model).__name__}) "
                         f"as {name}: that layout holds a {target.model_class.__name__}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    FAMILIES[name].export(pretrained, out)
    return out
