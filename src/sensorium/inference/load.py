"""`load(path_or_name)`: one entry point for every model Sensorium can run. The layout is recognised from the files'
contents, never from the folder's name; a path that is none of the layouts gets an error listing what was looked
for. Packaged defaults (`list_models()`) ship inside the package so search, chat, the API and the server work
before the user trains anything."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from sensorium.core.files import CheckpointError, load_state, read_json
from sensorium.inference.chat import ChatModel
from sensorium.inference.embedders import AlignedEmbedder, DualEncoderEmbedder, Embedder, UnifiedEmbedder
from sensorium.interop import build_tower, detect_family, load_pretrained
from sensorium.models.aligned import AlignedModel
from sensorium.models.unified import UnifiedModel
from sensorium.models.vlm import VisionLanguageModel

PACKAGED_DIR = Path(__file__).parent / "packaged"


@dataclass(frozen=True)
class Packaged:
    """A model that ships with Sensorium: its name, what it is, and its folder under inference/packaged/."""

    name: str
    kind: str  # embedder | chat
    description: str
    folder: str

    @property
    def path(self) -> Path:
        return PACKAGED_DIR / self.folder


PACKAGED: dict[str, Packaged] = {p.name: p for p in (
    Packaged("composer", "embedder", "image, text and speech in one 512-d space: projection heads over the packaged "
             "EfficientNet-Lite0, MiniLM-L6 and speech-MiniLM towers, trained on openclipart", "composer"),
    Packaged("decoder", "chat", "a small language decoder over images, trained on Sensorium World scenes (questions "
             "about shapes, colours, positions) and openclipart captions", "decoder"),
)}
ALIASES = {"default": "composer", "chat": "decoder"}

Model = Embedder | ChatModel


def list_models() -> list[dict[str, Any]]:
    """The packaged models: name, kind, description, whether their weights are installed, and where."""
    return [{"name": p.name, "kind": p.kind, "description": p.description, "installed": p.path.is_dir(),
             "path": str(p.path)} for p in PACKAGED.values()]


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _aligned(root: Path, name: str, device: str) -> Model | None:
    for folder in (root, root / "model"):
        config = _json(folder / "config.json")
        if config and "heads" in config and "towers" in config and (folder / "model.safetensors").is_file():
            model = AlignedModel.load(folder)
            towers = {m: build_tower(t) for m, t in model.config.towers.items() if m in model.heads}
            return AlignedEmbedder(model, towers, name, device)
    return None


def _vlm(root: Path, name: str, device: str) -> Model | None:
    for folder in (root, root / "model"):
        config = _json(folder / "config.json")
        if config and config.get("architecture") == "sensorium-vlm":
            return ChatModel(VisionLanguageModel.load(folder, device), name)
    return None


def _unified(root: Path, name: str, device: str) -> Model | None:
    for folder in (root, root / "model"):
        skeleton = _json(folder / "state.json")
        if skeleton and (folder / "tensors.safetensors").is_file() and "tokenizers" in json.dumps(skeleton)[:20000]:
            state = load_state(folder)
            if isinstance(state, dict) and isinstance(state.get("config"), dict) and "tokenizers" in state["config"]:
                return UnifiedEmbedder(UnifiedModel.load(folder), name, device)
    return None


def _checkpoint(root: Path, name: str, device: str) -> Model | None:
    for folder in (root, root / "model"):
        try:
            detect_family(folder)
        except CheckpointError:
            continue
        pretrained = load_pretrained(folder)
        return DualEncoderEmbedder(pretrained, name, device)
    return None


# (what it is, how to recognise and load it): tried in order
LAYOUTS: list[tuple[str, Callable[[Path, str, str], Model | None]]] = [
    ("a composer run or aligned model (config.json with heads and towers + model.safetensors)", _aligned),
    ("a language decoder run (`sensorium train vlm`: config.json with architecture sensorium-vlm)", _vlm),
    ("a unified encoder run (`sensorium train unified`: model/state.json)", _unified),
    ("a dual encoder checkpoint (`sensorium train clip` runs, HF CLIP/SigLIP, open_clip)", _checkpoint),
]


def resolve(source: str | Path) -> tuple[Path, str]:
    """A packaged name, alias or path -> (directory, display name)."""
    text = str(source)
    name = ALIASES.get(text, text)
    if name in PACKAGED and not Path(text).exists():
        packaged = PACKAGED[name]
        if not packaged.path.is_dir():
            raise FileNotFoundError(f"the packaged model {name!r} is not installed at {packaged.path}; reinstall "
                                    "Sensorium (scripts/setup)")
        return packaged.path, name
    path = Path(text).expanduser()
    if not path.exists():
        known = ", ".join([*PACKAGED, *ALIASES])
        raise FileNotFoundError(f"{text}: no such model directory and no packaged model of that name "
                                f"(packaged: {known})")
    return path, path.name or text


def load(source: str | Path = "default", device: str | torch.device = "cpu") -> Model:
    """The model at `source`: a packaged name (`composer`, `decoder`; `default` = composer), a run directory, or a
    checkpoint directory. Embedding models have `.embed(modality, items)`; language decoders `.chat(messages)`."""
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is available here; use device='cpu'")
    root, name = resolve(source)
    if not root.is_dir():
        raise ValueError(f"{root}: a model is a directory, not a file")
    for _, loader in LAYOUTS:
        model = loader(root, name, device)
        if model is not None:
            return model
    for folder in (root, root / "model"):  # a damaged config is named, not reported as an unknown layout
        for config in ("config.json", "state.json"):
            if (folder / config).is_file():
                read_json(folder / config)
    looked = "\n  - ".join(what for what, _ in LAYOUTS)
    raise ValueError(f"{root}: not a model directory Sensorium knows. Looked for:\n  - {looked}")
