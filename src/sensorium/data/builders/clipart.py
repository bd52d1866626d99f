"""`sensorium data build clipart`: Debian's openclipart-svg -> WebDataset shards with a rasterised image,
a caption made from title/keywords/category, the caption spoken by espeak-ng, and provenance JSON.

Captions: placeholder titles ("Clipart by ...", "Part of the ... Collection", titles shared by many files,
the author's name) and untranslated ones (non-ASCII, non-English language tag) fall back to words from the
file name (author tokens and numbers removed). Identical captions are capped so retrieval stays meaningful.
Split (train/val/test = 80/10/10) is by a hash of the key, so it never depends on file order."""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from sensorium.core.errors import MissingDependency
from sensorium.core.progress import progress_bar
from sensorium.data.shards import ShardWriter
from sensorium.data.tts import espeak_binary, synthesize, voice_for
from sensorium.modalities import get

BUILDER_VERSION = 2  # 2: names from 'Clipart by X - name' titles, digits stripped from file-name words
DEFAULT_SOURCE = Path("/usr/share/openclipart/svg")
SPLITS = {"train": 80, "val": 10, "test": 10}

_PLACEHOLDER = re.compile(r"(^clipart by\b)|(\bcollection\b)|(\btheme\b)|(\bcliparts?\b)|(\bsubmission\b)|(\bsibmission\b)"
                          r"|(^untitled)|(^drawing)|(^image\d*$)|(^layer)|(^svg\b)", re.I)
_STOP = {"", "hash", "svg", "icon", "icons", "clipart", "clip", "art", "openclipart", "image", "the", "of", "and",
         "a", "an", "alt", "new", "old", "other", "misc", "various", "simple"}


@dataclass
class ClipartConfig:
    """What to build: source folder, output folder, image size, audio on/off, caption cap, limits."""

    source: str = str(DEFAULT_SOURCE)
    out: str = "data/clipart"
    image_size: int = 256
    audio: bool = True
    max_per_caption: int = 2
    generic_title_min_files: int = 8
    limit: int | None = None
    workers: int = 4
    shard_size: int = 1000
    seed: int = 0


@dataclass
class Record:
    """One candidate item after metadata parsing (before rendering)."""

    key: str
    path: str
    caption: str
    split: str
    meta: dict[str, Any] = field(default_factory=dict)


def _words(text: str) -> list[str]:
    text = re.sub(r"\b(https?://\S*|www\.\S*|0x[0-9a-f]+)", " ", text.lower())  # urls and hex ids are noise
    return [w for w in re.split(r"[^a-z0-9]+", text) if w and w not in ("http", "https", "www", "com", "org")]


def _tag(text: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S)
    return html.unescape(match.group(1)).strip() if match else None


def parse_metadata(svg_text: str) -> dict[str, Any]:
    """Title, keywords, creator, licence and language from an SVG's RDF metadata (empty fields if absent)."""
    work = re.search(r"<cc:Work.*?</cc:Work>", svg_text, re.S)
    block = work.group(0) if work else ""
    creator = re.search(r"<dc:creator>.*?<dc:title>(.*?)</dc:title>", block, re.S)
    subject = re.search(r"<dc:subject>(.*?)</dc:subject>", block, re.S)
    licence = re.search(r'<cc:license rdf:resource="([^"]*)"', block)
    title = _tag(block, "dc:title") or ""
    return {
        "title": re.sub(r"\s+", " ", title),
        "keywords": [html.unescape(k).strip() for k in re.findall(r"<rdf:li>(.*?)</rdf:li>", subject.group(1))] if subject else [],
        "creator": html.unescape(creator.group(1)).strip() if creator else "",
        "license": licence.group(1) if licence else "",
        "language": (_tag(block, "dc:language") or "").lower(),
    }


def _author_tokens(creator: str) -> set[str]:
    return {w for w in _words(creator) if len(w) >= 3}


def _drop_author(words: list[str], author: set[str]) -> list[str]:
    return [w for w in words if not any(a.startswith(w) or w.startswith(a) for a in author if len(w) >= 3)]


def name_from_filename(stem: str, creator: str) -> str:
    """'lightbulb_jon_phillips_01' -> 'lightbulb': file-name words minus author tokens and numbers."""
    words = [w for w in _words(re.sub(r"\d+", " ", stem)) if len(w) > 1]
    words = [w for w in _drop_author(words, _author_tokens(creator)) if w not in _STOP]
    return " ".join(words[:4])


def is_placeholder_title(title: str, meta: dict[str, Any], title_counts: Counter, min_files: int) -> bool:
    """True for titles that do not describe the picture (see module docstring)."""
    if not title or _PLACEHOLDER.search(title):
        return True
    if title.lower() == meta["creator"].lower() or title_counts[title.lower()] >= min_files:
        return True
    if any(ord(c) > 127 for c in title) or meta["language"] not in ("", "en", "en-us", "en-gb", "english"):
        return True  # untranslated: keywords and file name are English far more often
    return False


def make_caption(meta: dict[str, Any], stem: str, category: list[str], title_counts: Counter, min_files: int) -> str:
    """Caption = subject name, then up to five keywords, then the category path; lower case, no repeats."""
    title = meta["title"]
    if is_placeholder_title(title, meta, title_counts, min_files):
        named = re.match(r"clipart by .+? - (.+)$", title, re.I)  # "Clipart by X - arrow08_4" names the drawing
        name = name_from_filename(named.group(1) if named else stem, meta["creator"]) or name_from_filename(stem, meta["creator"])
    else:
        name = " ".join(_words(title))
    author = _author_tokens(meta["creator"])
    seen = set(name.split())
    keywords = []
    for kw in meta["keywords"]:
        words = [w for w in _drop_author(_words(kw.replace("_", " ")), author) if w not in _STOP and not w.isdigit()]
        phrase = " ".join(words)
        if phrase and not set(words) <= seen and not any(ord(c) > 127 for c in phrase):
            keywords.append(phrase)
            seen.update(words)
    cats = [" ".join(_words(c.replace("_", " "))) for c in category]
    cats = [c for c in cats if c and not set(c.split()) <= seen]
    parts = [p for p in [name, ", ".join(keywords[:5]), ", ".join(cats)] if p]
    return ", ".join(parts)


def split_of(key: str) -> str:
    """Deterministic split from a hash of the key."""
    bucket = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 100
    edge = 0
    for split, share in SPLITS.items():
        edge += share
        if bucket < edge:
            return split
    return "test"


def plan(config: ClipartConfig) -> tuple[list[Record], Counter]:
    """Parse every SVG's metadata, dedupe by content, make captions, cap repeats, assign splits."""
    source = Path(config.source)
    if not source.is_dir():
        raise MissingDependency(f"{source} not found: install the clipart with `sudo apt-get install -y openclipart-svg`"
                                " or pass --source DIR")
    files = sorted(source.rglob("*.svg"))
    skipped: Counter = Counter()
    metas: list[tuple[Path, str, dict[str, Any]]] = []
    seen_hashes: set[str] = set()
    for path in files:
        data = path.read_bytes()
        digest = hashlib.sha1(data).hexdigest()
        if digest in seen_hashes:
            skipped["duplicate_file"] += 1
            continue
        seen_hashes.add(digest)
        metas.append((path, digest, parse_metadata(data[:200_000].decode("utf-8", errors="replace"))))
    title_counts = Counter(m["title"].lower() for _, _, m in metas)
    per_caption: Counter = Counter()
    records = []
    for path, digest, meta in metas:
        rel = path.relative_to(source)
        caption = make_caption(meta, path.stem, list(rel.parts[:-1]), title_counts, config.generic_title_min_files)
        if len(caption.split()) < 1 or not re.search(r"[a-z]", caption):
            skipped["no_caption"] += 1
            continue
        if per_caption[caption] >= config.max_per_caption:
            skipped["caption_cap"] += 1
            continue
        per_caption[caption] += 1
        key = re.sub(r"[^A-Za-z0-9_-]+", "_", str(rel.with_suffix("")))
        meta = {**meta, "source": str(rel), "sha1": digest, "category": "/".join(rel.parts[:-1])}
        records.append(Record(key, str(path), caption, split_of(key), meta))
    if config.limit is not None:
        records = records[: config.limit]
    return records, skipped


def _rasterise(svg: bytes, size: int) -> bytes:
    """SVG -> PNG fitting a size x size box: librsvg's rsvg-convert when installed (C, ~20x faster), else cairosvg."""
    import shutil
    import subprocess

    exe = shutil.which("rsvg-convert")
    if exe:
        proc = subprocess.run([exe, "-a", "-w", str(size), "-h", str(size), "-f", "png"], input=svg,
                              capture_output=True, timeout=60)
        if proc.returncode != 0 or not proc.stdout:
            raise ValueError(f"rsvg-convert: {proc.stderr.decode(errors='replace').strip()[:160]}")
        return proc.stdout
    import cairosvg

    return cairosvg.svg2png(bytestring=svg, output_width=size)


def render_png(svg: bytes, size: int) -> bytes:
    """Rasterise onto a white size x size square (aspect kept); raises if nothing visible was drawn."""
    image = Image.open(io.BytesIO(_rasterise(svg, size)))
    if max(image.size) > size:
        image.thumbnail((size, size))
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(rgba, ((size - rgba.width) // 2, (size - rgba.height) // 2), mask=rgba.getchannel("A"))
    pixels = np.asarray(canvas)
    if pixels.min() > 245 or pixels.std() < 2.0:
        raise ValueError("rendered image is blank")
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def _materialise(args: tuple[Record, int, bool, int]) -> tuple[str, dict[str, bytes] | str]:
    """Worker: render the PNG and speak the caption; returns member bytes or the failure reason."""
    record, size, audio, seed = args
    try:
        members = {"png": render_png(Path(record.path).read_bytes(), size)}
    except Exception as exc:  # noqa: BLE001 - any renderer failure is a counted skip
        return record.key, f"render_failed: {type(exc).__name__}: {str(exc)[:120]}"
    meta = dict(record.meta, caption=record.caption, split=record.split, builder_version=BUILDER_VERSION)
    if audio:
        index = int(hashlib.sha1(f"{seed}:{record.key}".encode()).hexdigest()[:8], 16)
        voice = voice_for(index, np.random.default_rng(index))
        ext, members["wav"] = get("audio").encode(synthesize(record.caption, voice))
        meta["voice"] = voice.as_dict()
    members["txt"] = record.caption.encode("utf-8")
    members["json"] = json.dumps(meta, sort_keys=True).encode("utf-8")
    return record.key, members


def build(config: ClipartConfig, progress: bool = True) -> dict[str, Any]:
    """Build the shards and a report (counts per split, skips by reason) at `config.out`/report.json."""
    if config.audio:
        espeak_binary()  # fail early with the install hint
    start = time.time()
    records, skipped = plan(config)
    out = Path(config.out)
    for split in SPLITS:  # a rebuild replaces the old shards (their number may differ)
        for old in (out / split).glob("clipart-*.tar"):
            old.unlink()
    writers = {s: ShardWriter(out / s, prefix=f"clipart-{s}", max_count=config.shard_size) for s in SPLITS}
    counts: Counter = Counter()
    failures: list[str] = []
    jobs = [(r, config.image_size, config.audio, config.seed) for r in records]
    split_by_key = {r.key: r.split for r in records}
    pool = ProcessPoolExecutor(max_workers=config.workers)
    try:
        results: Iterator = pool.map(_materialise, jobs, chunksize=8)
        for key, result in progress_bar(results, total=len(jobs), desc="clipart", disable=not progress, unit="svg"):
            if isinstance(result, str):
                skipped[result.split(":", 1)[0]] += 1
                if len(failures) < 50:
                    failures.append(f"{key}: {result}")
                continue
            writers[split_by_key[key]].write({"__key__": key, **result})
            counts[split_by_key[key]] += 1
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an error must not wait for thousands of queued jobs
        for writer in writers.values():
            writer.close()
    report = {"builder": "clipart", "builder_version": BUILDER_VERSION, "config": asdict(config),
              "source_files": sum(1 for _ in Path(config.source).rglob("*.svg")), "written": sum(counts.values()),
              "splits": dict(counts), "skipped": dict(skipped), "failures": failures,
              "seconds": round(time.time() - start, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
