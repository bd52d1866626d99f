"""What `sensorium bench run` can be pointed at: one benchmark file, a manifest (bench.json: several tasks with
their files, kinds and training answers) or a built-in suite by name (World-Bench, generated on first use)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from sensorium.eval.bench.formats import TABLE_SUFFIXES, read_task
from sensorium.eval.bench.items import Task
from sensorium.eval.bench.world import WorldBenchConfig, build

# name -> (description, builder(cache, progress) -> manifest path)
BUILTINS: dict[str, tuple[str, Callable[..., Path]]] = {
    "world-bench": ("Sensorium World's held-out scenes as MCQ / yes-no / VQA / captioning / retrieval / zero-shot "
                    "tasks over images, tables, time series, video and speech",
                    lambda cache, progress=True, **config: build(cache, WorldBenchConfig(**config), progress)),
}


def load_manifest(path: str | Path, strict: bool = False, only: list[str] | None = None) -> tuple[str, list[Task]]:
    """(suite name, its tasks) from a bench.json; `only` keeps the named tasks."""
    path = Path(path)
    body = json.loads(path.read_text())
    entries = body.get("tasks") or []
    known = [e["name"] for e in entries]
    unknown = sorted(set(only or []) - set(known))
    if unknown:
        raise ValueError(f"{path}: no task {unknown}; it has {', '.join(known)}")
    tasks = []
    for e in entries:
        if only and e["name"] not in only:
            continue
        priors = str(path.parent / e["priors"]) if e.get("priors") else ""
        task = read_task(path.parent / e["file"], e.get("kind"), strict=strict, name=e["name"],
                         classes=e.get("classes"), priors=priors, extract=e.get("extract", ""))
        task.meta.update(e.get("meta", {}))
        tasks.append(task)
    return body.get("name", path.parent.name), tasks


def _is_manifest(path: Path) -> bool:
    """A bench.json is an object with `tasks`; a JSON benchmark file is a list of rows."""
    try:
        body = json.loads(path.read_text())
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("tasks"), list)


def resolve(target: str, *, cache: str | Path = "data/bench", strict: bool = False, kind: str | None = None,
            only: list[str] | None = None, progress: bool = True, **options: Any) -> tuple[str, list[Task]]:
    """(suite name, tasks) for a built-in name (`world-bench`, or `world-bench/image-mcq` for one task), a
    bench.json or a single benchmark file."""
    name, _, task = target.partition("/")
    if name in BUILTINS:
        manifest = BUILTINS[name][1](cache, progress)
        return load_manifest(manifest, strict, [task] if task else only)
    path = Path(target)
    if path.is_dir() and (path / "bench.json").is_file():
        path = path / "bench.json"
    if path.suffix == ".json" and path.is_file() and _is_manifest(path):
        return load_manifest(path, strict, only)
    if path.suffix.lower() in TABLE_SUFFIXES or path.is_file():
        one = read_task(path, kind, strict=strict, **options)
        return one.name, [one]
    known = ", ".join(BUILTINS)
    raise FileNotFoundError(f"{target}: no such benchmark file or built-in task (built-in: {known})")
