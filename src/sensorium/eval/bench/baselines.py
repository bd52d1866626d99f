"""Baselines that expose a benchmark's biases, scored exactly (expected values, never a sampled run):

- `random`: every option equally likely (1/N per question; (1/N)^N under CircularEval); for open questions a
  uniform pick from the category's training answers;
- `frequent`: the answer most often right in training for the question's category (ties: expected value);
- `blind`: the answer most often right in training for the exact question text, else the category's: a
  text-only model that never sees the picture.

They fit on training answers (`{"category", "question", "answer"}` rows: World-Bench writes them from World's
training split); with no such file they fit on the task's own answers, an upper bound on the bias."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from sensorium.eval.bench.circular import Unit
from sensorium.eval.bench.items import Item, Task
from sensorium.eval.vqa import normalize_answer

BASELINES = ("random", "frequent", "blind")


def prior_rows(task: Task) -> tuple[list[dict[str, str]], str]:
    """(training answers, where they came from) for a task: its priors file, else its own items."""
    if task.priors:
        path = Path(task.priors)
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return rows, str(path)
    return [{"category": it.category, "question": it.question,
             "answer": it.options.get(it.answer, it.answer) if it.options else it.answer} for it in task.items], \
        "the task's own answers (no training file: an upper bound on the bias)"


class Baseline:
    """A prior over answers fitted on training rows; scores options and answers open questions."""

    mode = "baseline"

    def __init__(self, name: str, rows: Iterable[dict[str, Any]], source: str = ""):
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        rows = list(rows)
        self.name, self.source, self.caption = name, source, most_frequent_caption(rows)
        self.by_question: dict[str, Counter] = defaultdict(Counter)
        self.by_category: dict[str, Counter] = defaultdict(Counter)
        self.overall: Counter = Counter()
        for r in rows:
            answer = normalize_answer(str(r["answer"]))
            self.by_question[str(r.get("question", ""))][answer] += 1
            self.by_category[str(r.get("category", ""))][answer] += 1
            self.overall[answer] += 1

    def reads(self) -> None:
        return None  # sees no media: sits every task

    def _score(self, item: Item, text: str) -> tuple[int, ...]:
        answer = normalize_answer(text)
        if self.name == "random":
            return (0,)
        category = (self.by_category[item.category][answer], self.overall[answer])
        return (self.by_question[item.question][answer], *category) if self.name == "blind" else category

    def option_scores(self, unit: Unit, kind: str = "") -> dict[str, tuple[int, ...]]:
        return {k: self._score(unit.item, t) for k, t in unit.options.items()}

    def answers(self, item: Item) -> dict[str, float]:
        """A distribution over answer texts for an open question: uniform over the best-scoring training answers
        of the category (all of them for `random`)."""
        pool = list(self.by_category.get(item.category) or self.overall)
        if not pool:
            return {}
        scores = {a: self._score(item, a) for a in pool}
        best = max(scores.values())
        top = [a for a, s in scores.items() if s == best]
        return {a: 1.0 / len(top) for a in top}


def most_frequent_caption(rows: Sequence[dict[str, Any]]) -> str:
    """The training caption seen most often (first seen on ties): the captioning baseline."""
    counts = Counter(str(r["answer"]) for r in rows)
    return max(counts, key=lambda c: (counts[c], -list(counts).index(c))) if counts else ""
