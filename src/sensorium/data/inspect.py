"""`sensorium data inspect`: what a dataset holds (samples and counts per modality, skips) and a PNG contact
sheet where a person can see it: one row per sample, a thumbnail per visual modality, its text beside them."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from sensorium import modalities
from sensorium.core.progress import progress_bar
from sensorium.data.formats import iter_source, open_source
from sensorium.data.shards import SkipLog, count_missing

THUMB = 96
TEXT_WIDTH = 380
PAD = 6
HEADER = 18
INK, PAPER, MUTED = (20, 20, 20), (255, 255, 255), (120, 120, 120)


def _font(size: int = 11) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _fit(image: Image.Image, box: int) -> Image.Image:
    """Scale into a box x box square, keeping aspect; small pictures are enlarged with crisp nearest pixels."""
    image = image.convert("RGB")
    scale = box / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.NEAREST if scale >= 1 else Image.BILINEAR)


def _summary(name: str, value: Any) -> str:
    """The words shown for a modality without a picture: text in full, anything else as short JSON."""
    if isinstance(value, str):
        return value
    try:
        text = json.dumps(value, ensure_ascii=False)
    except TypeError:
        text = repr(value)
    return f"{name}: {text[:160]}{'...' if len(text) > 160 else ''}"


def sheet_columns(samples: list[dict[str, Any]]) -> list[str]:
    """The modalities drawn as thumbnails: those with a preview present in any sample, in registry order."""
    return [n for n in modalities.names() if modalities.get(n).preview and any(n in s for s in samples)]


def contact_sheet(samples: list[dict[str, Any]], path: str | Path, thumb: int = THUMB,
                  text_width: int = TEXT_WIDTH) -> Path:
    """Draw `samples` as a contact sheet PNG: width = PAD + columns * (thumb + PAD) + text_width, height =
    HEADER + rows * (thumb + PAD). Returns the path."""
    columns = sheet_columns(samples)
    width = PAD + len(columns) * (thumb + PAD) + text_width
    height = HEADER + max(1, len(samples)) * (thumb + PAD)
    sheet = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for c, name in enumerate(columns + ["text"]):
        draw.text((PAD + c * (thumb + PAD), 3), name, fill=MUTED, font=font)
    chars = max(10, int(text_width / max(1.0, font.getlength("abcdefghij") / 10)) - 2)
    lines_per_row = max(1, (thumb - 4) // 13)
    for r, sample in enumerate(samples):
        top = HEADER + r * (thumb + PAD)
        for c, name in enumerate(columns):
            left = PAD + c * (thumb + PAD)
            if name not in sample:
                draw.rectangle([left, top, left + thumb - 1, top + thumb - 1], outline=MUTED)
                draw.text((left + 4, top + thumb // 2 - 6), f"no {name}", fill=MUTED, font=font)
                continue
            image = _fit(modalities.get(name).preview(sample[name]), thumb)
            sheet.paste(image, (left + (thumb - image.width) // 2, top + (thumb - image.height) // 2))
        rest = [n for n in modalities.names() if n in sample and n not in columns]
        rest.sort(key=lambda n: not isinstance(sample[n], str))  # plain text (captions) first, then the rest
        words = [_summary(n, sample[n]) for n in rest]
        lines = [str(sample.get("__key__", ""))]
        for text in words:
            lines += textwrap.wrap(text, chars) or [""]
        left = PAD + len(columns) * (thumb + PAD)
        for k, line in enumerate(lines[:lines_per_row]):
            draw.text((left, top + 2 + 13 * k), line, fill=MUTED if k == 0 else INK, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path


def inspect(spec: Any, sheet: str | Path | None = None, n_sheet: int = 16, strict: bool = False,
            **source_options: Any) -> dict[str, Any]:
    """Read every sample of a dataset (shards, manifest, COCO JSON or class folder), count samples and modalities,
    count skips (a sample lacking a member others have counts as `missing_<modality>`), and draw the first
    `n_sheet` samples as a contact sheet."""
    source = open_source(spec, **source_options)
    skips = SkipLog(strict=strict)
    counts: Counter = Counter()
    shown: list[dict[str, Any]] = []
    held: list[tuple[str, set[str]]] = []  # (where, modalities) per sample, for counting missing members
    for sample in progress_bar(iter_source(source, skips), desc="inspect", unit="sample", leave=False):
        present = {n for n in sample if n in modalities.names()}
        counts.update(present)
        where = f"{sample['__shard__']}:{sample['__key__']}" if "__shard__" in sample else str(sample.get("__key__"))
        held.append((where, present))
        if len(shown) < n_sheet:
            shown.append(sample)
    total = len(held)
    count_missing({m: [w for w, p in held if m not in p] for m in counts}, total, skips)
    report: dict[str, Any] = {"samples": total, "units": len(source.units()),
                              "modalities": {n: counts[n] for n in modalities.names() if counts[n]},
                              "skipped": skips.as_dict()}
    if sheet is not None and shown:
        report["contact_sheet"] = str(contact_sheet(shown, sheet))
    return report
