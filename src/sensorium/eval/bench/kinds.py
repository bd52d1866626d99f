"""The kinds of task the harness scores, declared once: the columns a file of that kind needs, whether its
items are answered by picking an option, the extraction rule for generated answers, the scoring modes that
can sit it, and its metrics. `detect_kind` tells the kind of a file from its columns when none is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sensorium.eval.bench import metrics
from sensorium.eval.bench.items import Item

SCORING_MODES = ("generate", "likelihood", "similarity")
YES_NO = {"yes": "Yes", "no": "No"}


@dataclass(frozen=True)
class Kind:
    """One kind of task. `required`: column groups of which each needs one present (e.g. answer | answers);
    `choice`: items carry options and are right when the picked option is the answer; `modes`: scoring modes
    that can take it (generate, likelihood, similarity); `aggregate(records, items)` -> metrics dict."""

    name: str
    description: str
    required: tuple[tuple[str, ...], ...]
    choice: bool
    extract: str
    modes: tuple[str, ...]
    aggregate: Callable[[Sequence[dict[str, Any]], Sequence[Item]], dict[str, Any]]
    max_tokens: int = 16


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("mcq", "multiple choice, VLMEvalKit TSV (index, image | image_path, question, hint, A..E, answer, category, "
         "l2-category, split)", (("index",), ("question",), ("answer",), ("A",), ("B",)), True, "mmbench",
         SCORING_MODES, metrics.choice_metrics),
    Kind("yesno", "yes/no questions, MME style (two per picture: acc, acc+, perception/cognition sums)",
         (("index",), ("question",), ("answer",)), True, "yes-no", SCORING_MODES, metrics.mme_metrics),
    Kind("vqa", "open questions: normalised exact match, VQAv2 soft accuracy with several answers",
         (("index",), ("question",), ("answer", "answers")), False, "", ("generate",), metrics.vqa_metrics),
    Kind("caption", "captioning: CIDEr-D and BLEU-4 against the references",
         (("index",), ("caption", "captions")), False, "", ("generate",), metrics.caption_metrics, max_tokens=48),
    Kind("retrieval", "image-text retrieval both ways, CLIP_benchmark style (R@1/5/10 beside chance)",
         (("index",), ("caption", "captions")), False, "", ("similarity",), metrics.retrieval_metrics),
    Kind("classification", "zero-shot classification, CLIP_benchmark style: every class name is an option",
         (("index",), ("label",)), True, "option-text", SCORING_MODES, metrics.choice_metrics),
)}


def get_kind(name: str) -> Kind:
    """A kind by name, with an error listing the known ones."""
    if name not in KINDS:
        raise ValueError(f"unknown task kind {name!r}; choose from {', '.join(KINDS)}")
    return KINDS[name]


def detect_kind(columns: Sequence[str], answers: Sequence[str], source: str) -> str:
    """The kind of a file from its columns: options A, B -> mcq; a label -> classification; captions ->
    caption; question + answers all yes/no -> yesno; question + answer -> vqa."""
    cols = set(columns)
    if {"A", "B"} <= cols:
        return "mcq"
    if "label" in cols:
        return "classification"
    if cols & {"caption", "captions"} and "question" not in cols:
        return "caption"
    if "question" in cols and cols & {"answer", "answers"}:
        said = {str(a).strip().lower().rstrip(".") for a in answers if str(a).strip()}
        return "yesno" if said and said <= set(YES_NO) else "vqa"
    raise ValueError(f"{source}: cannot tell the task kind from its columns {sorted(cols)[:12]}; expected options "
                     "A and B (mcq), question + answer (yesno / vqa), caption(s) (caption, retrieval) or label "
                     "(classification); or pass the kind (--kind)")
