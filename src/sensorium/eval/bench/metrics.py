"""Scores of a task from its per-question records (the lines of predictions.jsonl). Every record carries
`correct` in [0, 1] (an expected value for baselines that break ties at random), so one formula serves models
and baselines. Accuracies are percentages."""

from __future__ import annotations

from collections import defaultdict
from math import prod
from typing import Any, Callable, Sequence

import torch

from sensorium.core.errors import MissingDependency
from sensorium.eval.bench.items import Item
from sensorium.eval.captioning import caption_report, cider_d
from sensorium.eval.retrieval import chance_metrics, summarize
from sensorium.eval.vqa import normalize_answer

# MME's two category families (its eval_tool and lmms-eval): the scores of each family are summed
MME_FAMILIES: dict[str, tuple[str, ...]] = {
    "perception": ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                   "artwork", "OCR"),
    "cognition": ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"),
}


def _failures(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Generated answers that named no option (`unparsed`) and questions the model refused (`errors`, e.g. longer
    than its context): both counted wrong."""
    return {"unparsed": sum(r.get("parsed") is None and "raw" in r and "error" not in r for r in records),
            "errors": sum("error" in r for r in records)}


def _pct(values: Sequence[float]) -> float:
    return round(100.0 * sum(values) / len(values), 2) if values else 0.0


def _by(records: Sequence[dict[str, Any]], key: str, value: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    groups: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.get(key):
            groups[r[key]].append(value(r))
    return {k: {"n": len(v), "accuracy": _pct(v)} for k, v in sorted(groups.items())}


def circular_groups(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records of one question's rotations, by the question's index (MMBench's `index % 1e6`)."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        out[r["index"]].append(r)
    return out


def choice_metrics(records: Sequence[dict[str, Any]], items: Sequence[Item]) -> dict[str, Any]:
    """Accuracy overall, per category and per l2-category, and the unparsed count. With rotations (CircularEval)
    a question is right only if every rotation is right (the product of the rotations' expected correctness,
    i.e. independent tie-breaks for baselines); `accuracy` is then the circular one, `vanilla_accuracy` the
    first rotation's."""
    first = [r for r in records if r.get("rotation", 0) == 0]
    out: dict[str, Any] = {"n": len(first), "accuracy": _pct([r["correct"] for r in first]), **_failures(records),
                           "by_category": _by(first, "category", lambda r: r["correct"]),
                           "by_l2_category": _by(first, "l2", lambda r: r["correct"])}
    if any(r.get("rotation", 0) for r in records):
        whole = [dict(rs[0], correct=prod(r["correct"] for r in rs)) for rs in circular_groups(records).values()]
        out.update(vanilla_accuracy=out["accuracy"], accuracy=_pct([r["correct"] for r in whole]), circular=True,
                   rotations=len(records), by_category=_by(whole, "category", lambda r: r["correct"]),
                   by_l2_category=_by(whole, "l2", lambda r: r["correct"]),
                   vanilla_by_category=out["by_category"])
    return out


def mme_metrics(records: Sequence[dict[str, Any]], items: Sequence[Item]) -> dict[str, Any]:
    """MME: per category acc (questions) and acc+ (pictures whose questions are all right), score = acc + acc+;
    perception and cognition are the sums of their categories' scores. Also the plain accuracy and unparsed."""
    out = choice_metrics(records, items)
    cats: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        cats[r.get("category") or "all"][r.get("group") or r["index"]].append(r["correct"])
    table = {}
    for cat, groups in sorted(cats.items()):
        acc = _pct([c for g in groups.values() for c in g])
        acc_plus = _pct([prod(g) for g in groups.values()])
        table[cat] = {"n": sum(map(len, groups.values())), "pictures": len(groups), "acc": acc, "acc_plus": acc_plus,
                      "score": round(acc + acc_plus, 2)}
    out["mme"] = table
    for family, names in MME_FAMILIES.items():
        out[family] = round(sum(t["score"] for c, t in table.items() if c in names), 2)
    out["acc_plus"] = _pct([prod(g) for groups in cats.values() for g in groups.values()])
    return out


def soft_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQAv2's accuracy: over the leave-one-out subsets of the references, min(1, matches / 3), averaged; with
    one reference, normalised exact match. Answers are normalised (case, punctuation, articles, number words)."""
    pred = normalize_answer(prediction)
    refs = [normalize_answer(r) for r in references]
    if len(refs) <= 1:
        return float(bool(refs) and pred == refs[0])
    return sum(min(1.0, sum(pred == r for j, r in enumerate(refs) if j != i) / 3.0) for i in range(len(refs))) / len(refs)


def vqa_metrics(records: Sequence[dict[str, Any]], items: Sequence[Item]) -> dict[str, Any]:
    """Open VQA: (soft) accuracy overall and per category; empty answers counted as unparsed."""
    return {"n": len(records), "accuracy": _pct([r["correct"] for r in records]), **_failures(records),
            "by_category": _by(records, "category", lambda r: r["correct"])}


def caption_metrics(records: Sequence[dict[str, Any]], items: Sequence[Item]) -> dict[str, Any]:
    """CIDEr-D (document frequencies from this task's references) and corpus BLEU-4 of the generated captions."""
    refs = {item.index: item.references() for item in items}
    done = [r for r in records if r["index"] in refs]
    cands, references = [r.get("raw") or "" for r in done], [refs[r["index"]] for r in done]
    try:
        report = caption_report(cands, references)
    except MissingDependency as exc:  # CIDEr-D needs nothing extra; BLEU needs sacrebleu (the `eval` extra)
        cider, _ = cider_d(cands, references)
        report = {"n": len(cands), "cider_d": round(cider, 4), "bleu4": None, "bleu4_missing": str(exc)}
    return {**report, "unparsed": sum(not (r.get("raw") or "").strip() and "error" not in r for r in done),
            "errors": sum("error" in r for r in done)}


def retrieval_metrics(records: Sequence[dict[str, Any]], items: Sequence[Item]) -> dict[str, Any]:
    """R@1/5/10 and median rank per direction from the records' ranks, beside the chance of the same gallery."""
    owners = torch.tensor([i for i, item in enumerate(items) for _ in item.references()])
    images = torch.arange(len(items))
    out: dict[str, Any] = {"n": len(items), "captions": len(owners), "retrieval": {}, "chance": {}}
    for direction, (queries, gallery) in {"image->text": (images, owners), "text->image": (owners, images)}.items():
        ranks = torch.tensor([r["rank"] for r in records if r["direction"] == direction])
        if len(ranks):
            out["retrieval"][direction] = summarize(ranks)
            out["chance"][direction] = chance_metrics(queries, gallery)
    first = out["retrieval"].get("image->text", {})
    out["accuracy"] = first.get("R@1", 0.0)  # the headline number: image->text R@1
    return out
