"""VQA accuracy with deterministic answer normalisation. A prediction is normalised (lower case, punctuation
and articles dropped, number words -> digits) and must name exactly one answer of the question's answer space;
anything else is a parse failure, counted as wrong and reported as a rate (never a random fallback)."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Iterable, Sequence

NUMBERS = {w: str(i) for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                            "nine", "ten"))}
ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """'The Circle.' -> 'circle'; 'two' -> '2'; whitespace collapsed."""
    words = re.findall(r"[a-z0-9]+", text.lower().replace("colour", "color"))
    return " ".join(NUMBERS.get(w, w) for w in words if w not in ARTICLES)


def parse_answer(prediction: str, space: set[str]) -> str | None:
    """The one answer of `space` that the prediction names: the whole normalised text, else the single answer
    found as a whole phrase inside it; None when there is none or more than one (a parse failure)."""
    norm = normalize_answer(prediction)
    if norm in space:
        return norm
    found = [a for a in space if re.search(rf"(?<![a-z0-9]){re.escape(a)}(?![a-z0-9])", norm)]
    return found[0] if len(found) == 1 else None


def answer_spaces(golds: Iterable[str], types: Iterable[str]) -> dict[str, set[str]]:
    """Per question type, the set of normalised gold answers (pass training answers too for a complete space)."""
    spaces: dict[str, set[str]] = defaultdict(set)
    for gold, qtype in zip(golds, types):
        spaces[qtype].add(normalize_answer(gold))
    return dict(spaces)


def vqa_report(predictions: Sequence[str], golds: Sequence[str], types: Sequence[str],
               families: Sequence[str] | None = None, spaces: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """Accuracy overall, per question type and per family (e.g. relational / non-relational), with the parse
    failure rate of each; `spaces` defaults to the gold answers of each type."""
    if not (len(predictions) == len(golds) == len(types)):
        raise ValueError(f"{len(predictions)} predictions, {len(golds)} answers, {len(types)} types")
    families = families or ["all"] * len(golds)
    spaces = spaces or answer_spaces(golds, types)
    groups: dict[str, dict[str, list[int]]] = {"type": defaultdict(lambda: [0, 0, 0]),
                                               "family": defaultdict(lambda: [0, 0, 0])}
    correct = failed = 0
    for pred, gold, qtype, family in zip(predictions, golds, types, families):
        parsed = parse_answer(pred, spaces.get(qtype, set()))
        ok = parsed is not None and parsed == normalize_answer(gold)
        correct += ok
        failed += parsed is None
        for key, name in (("type", qtype), ("family", family)):
            groups[key][name][0] += 1
            groups[key][name][1] += ok
            groups[key][name][2] += parsed is None
    n = len(golds)

    def summary(counts: list[int]) -> dict[str, Any]:
        total, ok, bad = counts
        return {"n": total, "accuracy": round(100 * ok / max(1, total), 2),
                "parse_failure_rate": round(100 * bad / max(1, total), 2)}

    return {"n": n, "accuracy": round(100 * correct / max(1, n), 2),
            "parse_failure_rate": round(100 * failed / max(1, n), 2),
            "by_type": {k: summary(v) for k, v in sorted(groups["type"].items())},
            "by_family": {k: summary(v) for k, v in sorted(groups["family"].items())}}
