"""The harness's front door, shared by the CLI, the Python API and bench/ scripts: resolve a target into tasks,
give each task a scorer (a scoring mode over the model, or a baseline), run them and write the results."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sensorium.eval.bench.baselines import BASELINES
from sensorium.eval.bench.items import Task
from sensorium.eval.bench.report import suite_markdown
from sensorium.eval.bench.runner import baseline_scorer, run_task
from sensorium.eval.bench.scoring import MODES, default_mode
from sensorium.eval.bench.suite import resolve


def scorer_for(model: Any, task: Task, scoring: str | None = None, template: str | None = None) -> Any:
    """The scorer of one task: `model` is a model object or a baseline name ('baseline:blind' or 'blind')."""
    if isinstance(model, str):
        name = model.removeprefix("baseline:")
        if name not in BASELINES:
            raise ValueError(f"{model!r}: a model object or a baseline ({', '.join(BASELINES)}) is needed here")
        return baseline_scorer(name, task)
    mode = scoring or default_mode(model)
    if mode not in MODES:
        raise ValueError(f"unknown scoring {mode!r}; choose from {', '.join(MODES)}")
    return MODES[mode](model, template) if mode == "similarity" else MODES[mode](model)


def files_fingerprint(path: str | Path) -> str:
    """A hash of the names, sizes and modification times of the files under `path` (a model directory): changes
    when the weights are retrained or replaced; '' for a path that does not exist (a packaged name)."""
    root = Path(path)
    if not root.exists():
        return ""
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
        if p.is_file():
            stat = p.stat()
            h.update(f"{p.relative_to(root) if root.is_dir() else p.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _macro(results: dict[str, dict[str, Any]]) -> float | None:
    scores = [r["accuracy"] for r in results.values()
              if r.get("accuracy") is not None and r["kind"] in ("mcq", "yesno", "vqa", "classification")]
    return round(sum(scores) / len(scores), 2) if scores else None


def run_suite(target: str, model: Any, out: str | Path, *, model_name: str = "", scoring: str | None = None,
              template: str | None = None, circular: bool = False, limit: int | None = None, strict: bool = False,
              cache: str | Path = "data/bench", kind: str | None = None, only: list[str] | None = None,
              progress: bool = True, model_id: str = "") -> dict[str, Any]:
    """Run every task of `target` (a file, a bench.json or a built-in name). One task writes into `out`; several
    write into out/<task>/ and a suite summary into out/results.json (+ results.md)."""
    out = Path(out)
    name, tasks = resolve(target, cache=cache, strict=strict, kind=kind, only=only, progress=progress)
    label = model_name or (model if isinstance(model, str) else getattr(model, "name", type(model).__name__))
    results = {}
    for task in tasks:
        where = out if len(tasks) == 1 else out / task.name
        results[task.name] = run_task(task, scorer_for(model, task, scoring, template), where, model_name=label,
                                      model_id=model_id, circular=circular, limit=limit, progress=progress)
    if len(tasks) == 1:
        return next(iter(results.values()))
    summary = {"suite": name, "model": label, "accuracy": _macro(results), "tasks": results,
               "summary": {t: r.get("accuracy") if r["kind"] != "caption" or r.get("not_applicable")
                           else r.get("cider_d") for t, r in results.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "results.md").write_text(suite_markdown(name, label, results))
    return summary
