"""Captioning scores: corpus BLEU from sacrebleu (the maintained reference implementation) and CIDEr-D written
here (coco-caption's definition: tf-idf n-gram vectors, n = 1..4, clipped, Gaussian length penalty with
sigma 6, x10), since its only packaged implementation ships with a Java tokenizer and jars."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Sequence

from sensorium.core.errors import require

SIGMA = 6.0


def caption_tokens(text: str) -> list[str]:
    """Lower-cased word tokens with punctuation removed (a stand-in for the PTB tokenizer coco-caption uses)."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def _ngrams(tokens: list[str], n: int = 4) -> list[Counter]:
    return [Counter(tuple(tokens[i:i + k]) for i in range(len(tokens) - k + 1)) for k in range(1, n + 1)]


def _vector(counts: list[Counter], df: dict[tuple[str, ...], float], log_n: float) -> tuple[list[dict], list[float]]:
    vec = [{g: tf * (log_n - math.log(max(1.0, df.get(g, 0.0)))) for g, tf in c.items()} for c in counts]
    return vec, [math.sqrt(sum(v * v for v in d.values())) for d in vec]


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4,
            sigma: float = SIGMA) -> tuple[float, list[float]]:
    """CIDEr-D of each candidate against its references (document frequencies from all references); returns
    (corpus mean, per-item scores)."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    refs = [[_ngrams(caption_tokens(r), n) for r in rs] for rs in references]
    ref_lens = [[len(caption_tokens(r)) for r in rs] for rs in references]
    df: Counter = Counter()
    for rs in refs:
        df.update({g for r in rs for c in r for g in c})
    log_n = math.log(float(max(1, len(candidates))))
    scores = []
    for cand, rs, lens in zip(candidates, refs, ref_lens):
        tokens = caption_tokens(cand)
        vec_c, norm_c = _vector(_ngrams(tokens, n), df, log_n)
        total = 0.0
        for r, length in zip(rs, lens):
            vec_r, norm_r = _vector(r, df, log_n)
            penalty = math.exp(-((len(tokens) - length) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                dot = sum(min(v, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, v in vec_c[k].items())
                if norm_c[k] and norm_r[k]:
                    total += dot / (norm_c[k] * norm_r[k]) * penalty / n
        scores.append(10.0 * total / max(1, len(rs)))
    return (sum(scores) / len(scores) if scores else 0.0), scores


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Corpus BLEU-4 (sacrebleu, 13a tokenisation, lower-cased) with its 1..4-gram precisions."""
    sacrebleu = require("sacrebleu", "pip install sacrebleu")
    most = max((len(r) for r in references), default=0)
    streams = [[rs[i] if i < len(rs) else None for rs in references] for i in range(most)]
    result = sacrebleu.corpus_bleu(list(candidates), streams, lowercase=True)
    return {"bleu4": round(result.score, 2), "precisions": [round(p, 2) for p in result.precisions],
            "brevity_penalty": round(result.bp, 4)}


def caption_report(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Harness-shaped captioning scores: n, BLEU-4 (+ precisions), CIDEr-D, mean caption length."""
    cider, _ = cider_d(candidates, references)
    return {"n": len(candidates), **bleu(candidates, references), "cider_d": round(cider, 4),
            "mean_words": round(sum(len(caption_tokens(c)) for c in candidates) / max(1, len(candidates)), 2)}
