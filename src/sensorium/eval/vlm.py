"""Evaluating a language decoder on a prepared dataset: generate (greedy, batched) for every val question or
image, then score with eval.vqa (accuracy per question type / family, parse failures) or eval.captioning
(BLEU-4, CIDEr-D, next to the score of always answering the most frequent training caption)."""

from __future__ import annotations

import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from sensorium.core.progress import progress_bar
from sensorium.eval.captioning import caption_report
from sensorium.eval.vqa import answer_spaces, vqa_report
from sensorium.models.generation import GenerationConfig
from sensorium.models.template import placeholder


def _generate_all(model: Any, convs: list[list[dict[str, str]]], rows: list[int], media: Any, batch: int,
                  config: GenerationConfig, desc: str) -> list[str]:
    out: list[str] = []
    for start in progress_bar(range(0, len(convs), batch), desc=desc, unit="batch"):
        inputs = {"image": media.take(rows[start:start + batch])}
        out += [g.text for g in model.generate(convs[start:start + batch], inputs, config)]
    return out


def example_grid(images: list[Any], lines: list[str], out: Path, columns: int = 4) -> Path:
    """Images with their question / prediction / reference text underneath, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 4.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, text in zip(axes.flat, images, lines):
        if isinstance(picture, torch.Tensor):
            picture = picture.permute(1, 2, 0).cpu().numpy()
        ax.imshow(picture)
        ax.set_title("\n".join(textwrap.wrap(text, 34)[:6]), fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


@torch.inference_mode()
def evaluate_data(model: Any, prepared: Any, recipe: Any, limit: int | None = None,
                  pictures: Path | None = None) -> dict[str, Any]:
    """Harness-shaped report ({"n": ...}) for the val split of one prepared dataset; `pictures` also writes a
    PNG of the first examples there."""
    cfg, val = prepared.config, prepared.val
    limit = limit if limit is not None else recipe.eval_n
    model.eval()
    image = placeholder("image")
    start = time.time()
    if cfg.task == "vqa":
        items = [(i, q) for i in range(len(val)) for q in val.qa[i]]
        items = items[:limit] if limit else items
        convs = [[{"role": "user", "content": f"{image}\n{q['question']}"}] for _, q in items]
        preds = _generate_all(model, convs, [i for i, _ in items], prepared.val_media, recipe.eval_batch,
                              GenerationConfig(max_new_tokens=8), "vqa eval")
        golds, types = [q["answer"] for _, q in items], [q["type"] for _, q in items]
        train_qa = [q for qa in prepared.train.qa for q in qa]
        spaces = answer_spaces([q["answer"] for q in train_qa] + golds, [q["type"] for q in train_qa] + types)
        report = vqa_report(preds, golds, types, [q["family"] for _, q in items], spaces)
        report["examples"] = [{"key": val.keys[i], "question": q["question"], "answer": q["answer"], "prediction": p}
                              for (i, q), p in list(zip(items, preds))[:12]]
        shown = list(zip(items, preds))[::max(1, len(items) // 12)][:12]  # spread over scenes and types
        lines = [f"Q: {q['question']}\npredicted: {p!r}  (answer: {q['answer']})" for (_, q), p in shown]
        images = [val.images[i] for (i, _), _ in shown]
    else:
        n = min(len(val), limit) if limit else len(val)
        convs = [[{"role": "user", "content": f"{image}\n{cfg.prompt}"}] for _ in range(n)]
        preds = _generate_all(model, convs, list(range(n)), prepared.val_media, recipe.eval_batch,
                              GenerationConfig(max_new_tokens=48), "caption eval")
        refs = [[c] for c in val.captions[:n]]
        report = caption_report(preds, refs)
        common = Counter(prepared.train.captions).most_common(1)[0][0]
        report["baseline_most_frequent_caption"] = caption_report([common] * n, refs)
        report["examples"] = [{"key": val.keys[i], "reference": val.captions[i], "prediction": preds[i]}
                              for i in range(min(12, n))]
        lines = [f"predicted: {preds[i]}\nreference: {val.captions[i]}" for i in range(min(12, n))]
        images = [val.images[i] for i in range(min(12, n))]
    report["eval_seconds"] = round(time.time() - start, 1)
    if pictures is not None and images:
        example_grid(images, lines, pictures)
    return report
