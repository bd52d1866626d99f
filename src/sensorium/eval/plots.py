"""Pictures of results: loss curves from metrics.jsonl and a grid of retrieval hits."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def loss_curve(metrics_path: str | Path, out: str | Path) -> Path:
    """Training loss per stage (and validation R@10 where logged) against step."""
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    stages = list(dict.fromkeys(r["stage"] for r in records))
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.5), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rows = [r for r in records if r["stage"] == stage]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss")
        ax.set_title(stage)
        ax.set_xlabel("step")
        val_keys = sorted({k for r in rows for k in r if k.startswith("val/") and k.endswith("R@10")})
        if val_keys:
            twin = ax.twinx()
            for key in val_keys:
                pts = [(r["step"], r[key]) for r in rows if key in r]
                twin.plot(*zip(*pts), "o--", label=key[4:])
            twin.set_ylabel("val R@10 (%)")
            twin.legend(fontsize=7, loc="center right")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def hit_grid(rows: Sequence[dict[str, Any]], out: str | Path, title: str = "") -> Path:
    """rows: `{"query": str, "hits": [{"image": PIL|None, "text": str, "score": float, "correct": bool}]}`."""
    n_rows = len(rows)
    n_cols = max(len(r["hits"]) for r in rows) + 1
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.1 * n_cols, 2.3 * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        ax = axes[r][0]
        ax.axis("off")
        ax.text(0.0, 0.5, "\n".join(textwrap.wrap(row["query"], 22)[:6]), fontsize=8, va="center")
        for c in range(1, n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c - 1 >= len(row["hits"]):
                continue
            hit = row["hits"][c - 1]
            if hit.get("image") is not None:
                ax.imshow(hit["image"])
            else:
                ax.text(0.5, 0.5, "\n".join(textwrap.wrap(hit.get("text", ""), 20)[:6]), fontsize=7,
                        ha="center", va="center")
            colour = "green" if hit.get("correct") else "black"
            ax.set_title(f"{hit['score']:.2f}" + (" ✓" if hit.get("correct") else ""), fontsize=8, color=colour)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return Path(out)
