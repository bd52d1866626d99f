"""Running a task: ask the model every unit (resuming from DIR/predictions.jsonl), judge each answer, aggregate,
and write DIR/results.json (with the headline `accuracy` in percent), DIR/results.md and the predictions (raw
output, parsed answer, right or wrong, one JSON line per unit). A predictions file written for another model,
task or setting is refused, never mixed in."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from sensorium.core.progress import progress_bar
from sensorium.eval.bench.baselines import Baseline, prior_rows
from sensorium.eval.bench.circular import Unit, units
from sensorium.eval.bench.extract import get_extractor
from sensorium.eval.bench.items import Task
from sensorium.eval.bench.kinds import Kind, get_kind
from sensorium.eval.bench.metrics import soft_accuracy
from sensorium.eval.bench.prompts import prompt
from sensorium.eval.bench.report import task_markdown
from sensorium.eval.bench.scoring import pick
from sensorium.eval.vqa import normalize_answer

log = logging.getLogger(__name__)


def _sha1(path: str) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16] if path and Path(path).is_file() else ""


def supports(kind: Kind, scorer: Any) -> str:
    """'' when the scorer can sit a task of this kind, else why not."""
    if scorer.mode == "baseline":
        if kind.name == "retrieval":
            return "a retrieval baseline is its chance level, shown beside every model's score"
        if kind.name == "caption" and scorer.name != "frequent":
            return "captioning has only the most-frequent-caption baseline"
        return ""
    return "" if scorer.mode in kind.modes else f"{kind.name} needs scoring by {' or '.join(kind.modes)}"


class Refused(str):
    """What a model said when it could not take a question (e.g. a prompt longer than its context)."""


def _ask(chunk: Sequence[Unit], task: Task, kind: Kind, scorer: Any) -> list[str | None]:
    """Generated answers for a chunk of units (None for the other scoring modes: they score in `_judge`). A
    question the model refuses (ValueError: too long, media it cannot take) is asked alone; if it is refused
    again, its answer is a `Refused` with the reason: counted wrong and shown, never dropped."""
    if scorer.mode != "generate":
        return [None] * len(chunk)
    texts = [prompt(kind.name, u.item, u.options, task.meta) for u in chunk]
    limit = int(task.meta.get("max_tokens", kind.max_tokens))
    try:
        return scorer.generate_batch(texts, [u.item for u in chunk], limit)
    except ValueError:
        pass
    out: list[str | None] = []
    for text, unit in zip(texts, chunk):
        try:
            out += scorer.generate_batch([text], [unit.item], limit)
        except ValueError as exc:
            out.append(Refused(str(exc)))
    return out


def _judge(unit: Unit, task: Task, kind: Kind, scorer: Any, raw: str | None = None) -> dict[str, Any]:
    """One unit judged (its generated answer `raw`, or scored here): the predictions.jsonl record."""
    item = unit.item
    rec: dict[str, Any] = {"id": unit.id, "index": item.index, "rotation": unit.rotation, "category": item.category,
                           "l2": item.l2, "group": item.group, "answer": unit.answer}
    if isinstance(raw, Refused) or scorer.mode != "generate" and kind.choice:
        try:
            scores = None if isinstance(raw, Refused) else scorer.option_scores(unit, kind.name)
        except ValueError as exc:
            raw = Refused(str(exc))
        if isinstance(raw, Refused):
            return {**rec, "raw": "", "parsed": None, "correct": 0.0, "error": str(raw)}
    if scorer.mode == "generate":
        rec["raw"] = raw
        if kind.choice:
            got = get_extractor(task.extract or kind.extract)(raw, unit.options)
            rec.update(parsed=got.choice, rule=got.rule, correct=float(got.choice == unit.answer))
            if got.reason:
                rec["reason"] = got.reason
        elif kind.name == "vqa":
            rec.update(parsed=normalize_answer(raw) or None, correct=soft_accuracy(raw, item.references()))
        return rec
    if kind.choice:
        chosen, correct, ties = pick(scores, unit.answer)
        rec.update(parsed=chosen, correct=correct, scores={k: list(v) if isinstance(v, tuple) else round(v, 5)
                                                           for k, v in scores.items()})
        if len(ties) > 1:
            rec["ties"] = ties
        return rec
    if kind.name == "vqa":  # a baseline's distribution over answers
        dist = scorer.answers(item)
        rec.update(parsed=max(dist, key=dist.get) if dist else None,
                   correct=sum(p * soft_accuracy(a, item.references()) for a, p in dist.items()))
        return rec
    rec["raw"] = scorer.caption
    return rec


def _load(path: Path) -> dict[str, dict[str, Any]]:
    done = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            log.warning("%s line %d: not JSON (an interrupted write?); asking that unit again", path, n)
            continue
        done[rec["id"]] = rec
    return done


def _fingerprint(out: Path, setting: dict[str, Any]) -> None:
    """Refuse predictions written under another setting; record this one."""
    path = out / "run.json"
    if (out / "predictions.jsonl").is_file() and path.is_file():
        old = json.loads(path.read_text())
        changed = {k: (old.get(k), v) for k, v in setting.items() if old.get(k) != v}
        if changed:
            what = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"{out / 'predictions.jsonl'} was written for another run ({what}); use another --out "
                             "or delete it")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(setting, indent=1) + "\n")


def run_task(task: Task, scorer: Any, out: str | Path, *, model_name: str = "", model_id: str = "",
             circular: bool = False, limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Score `scorer` (scoring.Generate / Likelihood / Similarity or a Baseline) on `task`; see module doc.
    `model_id` identifies the weights (see api.files_fingerprint), so predictions of retrained weights at the same
    path are not resumed."""
    out = Path(out)
    kind = get_kind(task.kind)
    start = time.time()
    circular = circular and kind.name == "mcq"
    base = {"task": task.name, "kind": kind.name, "source": task.source, "model": model_name or scorer.mode,
            "scoring": scorer.mode if scorer.mode != "baseline" else f"baseline:{scorer.name}", "circular": circular}
    why = supports(kind, scorer)
    if why:
        return {**base, "n": 0, "accuracy": None, "not_applicable": why}
    items = task.items[:limit] if limit else list(task.items)
    reads = scorer.reads()
    unsupported = [it for it in items if reads is not None and not set(it.modalities) <= reads]
    items = [it for it in items if it not in unsupported]
    skipped = {"read": len(task.skipped), "read_examples": task.skipped[:5], "unsupported": len(unsupported)}
    if unsupported and reads is not None:
        needs = sorted({m for it in unsupported for m in it.modalities} - reads)
        skipped["unsupported_reason"] = f"the model reads {', '.join(sorted(reads)) or 'no media'}, not {', '.join(needs)}"
    if not items:
        return {**base, "n": 0, "accuracy": None, "skipped": skipped,
                "not_applicable": skipped.get("unsupported_reason", "no items")}
    setting = {**base, "model_id": model_id, "sha1": _sha1(task.source), "extract": task.extract or kind.extract,
               "template": getattr(scorer, "template", None)}
    _fingerprint(out, setting)
    pred_path = out / "predictions.jsonl"
    done = _load(pred_path) if pred_path.is_file() else {}
    if kind.name == "retrieval":
        records = scorer.retrieval(items)
        pred_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        todo = [u for u in units(items, circular) if u.id not in done]
        if hasattr(scorer, "prepare"):
            scorer.prepare(list({id(u.item): u.item for u in todo}.values()))
        if done:
            log.info("%s: %d units already in %s, %d to ask", task.name, len(done), pred_path, len(todo))
        step = getattr(scorer, "batch", 1) if scorer.mode == "generate" else 1
        with pred_path.open("a") as sink, progress_bar(total=len(todo), desc=task.name, unit="q",
                                                       disable=not progress) as bar:
            for first in range(0, len(todo), step):
                chunk = todo[first:first + step]
                for unit, raw in zip(chunk, _ask(chunk, task, kind, scorer)):
                    rec = _judge(unit, task, kind, scorer, raw)
                    sink.write(json.dumps(rec) + "\n")
                    done[rec["id"]] = rec
                sink.flush()
                bar.update(len(chunk))
        records = [done[u.id] for u in units(items, circular)]
    result = {**base, **kind.aggregate(records, items), "extract": setting["extract"] if kind.choice else None,
              "skipped": skipped, "seconds": round(time.time() - start, 1)}
    if getattr(scorer, "template", None):
        result["template"] = scorer.template
    if scorer.mode == "baseline":
        result["priors"] = scorer.source
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(task_markdown(result, records))
    return result


def baseline_scorer(name: str, task: Task) -> Baseline:
    """A baseline fitted on the task's training answers (see baselines.prior_rows)."""
    rows, source = prior_rows(task)
    return Baseline(name, rows, source)


def run_tasks(tasks: Sequence[Task], make_scorer: Any, out: str | Path, **options: Any) -> dict[str, dict[str, Any]]:
    """Run several tasks into out/<task>/ with `make_scorer(task)` giving each its scorer."""
    return {task.name: run_task(task, make_scorer(task), Path(out) / task.name, **options) for task in tasks}
