"""World-Bench questions from Sensorium World scene graphs: every answer is computed from object attributes and
coordinates (never from pixels), and questions whose answer a person could misjudge (an object on a region
border, two nearly equal distances, a diagonal relation) are not asked. Each builder turns one scene into rows
`{question, options?, answer, category, l2, hint?, media: [modality, ...]}`; the writer adds the media."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from sensorium.data.world import COLORS, SHAPES, SIZES, Scene, caption, questions, relation
from sensorium.data.world.language import REGIONS, region

REGION_NAMES = [name for row in REGIONS for name in row]
RELATIONS = ("left of", "right of", "above", "below")
DIRECTIONS = ("up", "down", "left", "right")
YES_NO_SUFFIX = " Please answer yes or no."
Row = dict[str, Any]


def options(rng: np.random.Generator, gold: str, pool: list[str] | tuple[str, ...], k: int = 4) -> list[str]:
    """The gold answer and up to k-1 distinct distractors from `pool`, in a random order."""
    others = [p for p in pool if p != gold]
    picks = [others[int(i)] for i in rng.choice(len(others), size=min(k - 1, len(others)), replace=False)]
    opts = [gold, *picks]
    return [opts[int(i)] for i in rng.permutation(len(opts))]


def _row(question: str, gold: str, category: str, l2: str, opts: list[str] | None = None, **extra: Any) -> Row:
    return {"question": question, "answer": gold, "category": category, "l2": l2, "options": opts, **extra}


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))] if items else None


def _clear_region(o: Any, margin: float = 0.04) -> bool:
    return all(abs(v - b) >= margin for v in (o.x, o.y) for b in (1 / 3, 2 / 3))


def _ranked(scene: Scene, ref: Any) -> list[tuple[float, Any]]:
    return sorted(((float(np.hypot(o.x - ref.x, o.y - ref.y)), o) for o in scene.objects if o.id != ref.id),
                  key=lambda p: (p[0], p[1].id))


def image_mcq(scene: Scene, rng: np.random.Generator) -> list[Row]:
    """Count, colour, shape, size, position (perception) and spatial relation, closest, furthest (relation)."""
    objs, rows = list(scene.objects), []
    shapes = [o.shape for o in objs]
    unique = [o for o in objs if shapes.count(o.shape) == 1]
    if (o := _pick(rng, unique)) is not None:
        rows.append(_row(f"What colour is the {o.shape}?", o.color, "color", "perception",
                         options(rng, o.color, list(COLORS))))
    o = _pick(rng, objs)
    rows.append(_row(f"What shape is the {o.color} object?", o.shape, "shape", "perception", options(rng, o.shape, SHAPES)))
    o = _pick(rng, objs)
    rows.append(_row(f"What size is the {o.name}?", o.size, "size", "perception", options(rng, o.size, list(SIZES))))
    by_count: dict[int, list[str]] = {}
    for s in SHAPES:  # the count first (each count the scene offers equally likely), then a shape with it
        by_count.setdefault(shapes.count(s), []).append(s)
    count = int(rng.choice(sorted(by_count)))
    shape = str(rng.choice(by_count[count]))
    rows.append(_row(f"How many {shape}s are there?", str(count), "count", "perception",
                     options(rng, str(count), [str(i) for i in range(7)])))
    if (o := _pick(rng, [x for x in objs if _clear_region(x)])) is not None:
        rows.append(_row(f"Where is the {o.name} in the picture?", region(o), "position", "perception",
                         options(rng, region(o), REGION_NAMES)))
    pairs = [(a, b) for a in objs for b in objs if a.id != b.id and abs(abs(a.x - b.x) - abs(a.y - b.y)) > 0.1]
    if (pair := _pick(rng, pairs)) is not None:
        a, b = pair
        rows.append(_row(f"Where is the {a.name} relative to the {b.name}?", relation(a, b), "spatial relation",
                         "relation", options(rng, relation(a, b), RELATIONS)))
    if len(objs) >= 3:
        for category, end in (("closest", 0), ("furthest", -1)):
            ref = _pick(rng, objs)
            ranked = _ranked(scene, ref)
            gap = ranked[1][0] - ranked[0][0] if end == 0 else ranked[-1][0] - ranked[-2][0]
            if gap >= 0.05:
                gold = ranked[end][1].name
                rows.append(_row(f"Which object is {category} to the {ref.name}?" if end == 0 else
                                 f"Which object is {category} from the {ref.name}?", gold, category, "relation",
                                 options(rng, gold, [o.name for _, o in ranked])))
    return rows


def image_yesno(scene: Scene, rng: np.random.Generator) -> list[Row]:
    """MME style: two questions about one picture in one category (existence, count, color, position), one
    answered yes and one no."""
    objs = list(scene.objects)
    category = ("existence", "count", "color", "position")[scene.index % 4]
    pair: list[tuple[str, str]] = []
    if category == "existence":
        o = _pick(rng, objs)
        present = {(x.color, x.shape) for x in objs}
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        c, s = absent[int(rng.integers(len(absent)))]
        pair = [(f"Is there a {o.color} {o.shape} in the image?", "yes"), (f"Is there a {c} {s} in the image?", "no")]
    elif category == "count":
        wrong = str(rng.choice([k for k in range(1, 7) if k != len(objs)]))
        pair = [(f"Are there exactly {len(objs)} objects in the image?", "yes"),
                (f"Are there exactly {wrong} objects in the image?", "no")]
    elif category == "color":
        shapes = [x.shape for x in objs]
        o = _pick(rng, [x for x in objs if shapes.count(x.shape) == 1])
        if o is not None:
            other = str(rng.choice([c for c in COLORS if c != o.color]))
            pair = [(f"Is the {o.shape} {o.color}?", "yes"), (f"Is the {o.shape} {other}?", "no")]
    else:
        o = _pick(rng, [x for x in objs if abs(x.x - 0.5) > 0.1])
        if o is not None:
            side, other = ("left", "right") if o.x < 0.5 else ("right", "left")
            pair = [(f"Is the {o.name} on the {side} side of the image?", "yes"),
                    (f"Is the {o.name} on the {other} side of the image?", "no")]
    order = rng.permutation(len(pair))
    return [_row(pair[int(i)][0] + YES_NO_SUFFIX, pair[int(i)][1], category, "perception") for i in order]


def image_vqa(scene: Scene, rng: np.random.Generator) -> list[Row]:
    """World's own Sort-of-CLEVR questions (what the project's decoders train on), answered in a word."""
    types = ("color", "shape", "position", "closest", "furthest", "count")
    return [_row(q["question"], q["answer"], q["type"], q["family"]) for q in questions(scene, rng, types)]


def table_mcq(scene: Scene, rng: np.random.Generator) -> list[Row]:
    """Questions about the scene written as a table in the hint (text only): look a value up, find the maximum."""
    lines = ["| object | shape | colour | size | x | y |", "|---|---|---|---|---|---|"]
    lines += [f"| {o.id} | {o.shape} | {o.color} | {o.size} | {o.x:.2f} | {o.y:.2f} |" for o in scene.objects]
    hint = "\n".join(lines)
    o = _pick(rng, list(scene.objects))
    rows = [_row(f"In the table, what shape is the {o.color} object?", o.shape, "table lookup", "text",
                 options(rng, o.shape, SHAPES), hint=hint)]
    xs = sorted(scene.objects, key=lambda x: -x.x)
    if len(xs) >= 2 and xs[0].x - xs[1].x >= 0.02:
        rows.append(_row("In the table, what colour is the object with the largest x?", xs[0].color, "table maximum",
                         "text", options(rng, xs[0].color, [x.color for x in scene.objects] + list(COLORS)), hint=hint))
    return rows


def timeseries_mcq(scene: Scene, rng: np.random.Generator) -> list[Row]:
    """The moving object's trace (channels x, y, vx, vy, ax, ay over time; y grows downwards): which way does it go?
    (Short, so an embedding model's text side holds the whole question and option.)"""
    gold = scene.motion.direction
    return [_row("Which way does the traced object move?", gold, "time-series trend", "motion",
                 options(rng, gold, DIRECTIONS), media=["timeseries"])]


def video_mcq(scene: Scene, rng: np.random.Generator) -> list[Row]:
    """Which way the moving object goes, and which object moves."""
    mover = scene.obj(scene.motion.object_id)
    rows = [_row(f"Which way does the {mover.color} object move?", scene.motion.direction, "video motion", "motion",
                 options(rng, scene.motion.direction, DIRECTIONS), media=["video"])]
    if len(scene.objects) >= 2:
        rows.append(_row("Which object moves?", mover.name, "video mover", "motion",
                         options(rng, mover.name, [o.name for o in scene.objects]), media=["video"]))
    return rows


def audio_mcq(scene: Scene, rng: np.random.Generator) -> list[Row]:
    """A spoken description of a one-object scene: which shape / colour does the speaker name?"""
    o = scene.objects[0]
    return [_row("Which shape does the speaker name?", o.shape, "spoken shape", "speech", options(rng, o.shape, SHAPES),
                 media=["audio"]),
            _row("Which colour does the speaker name?", o.color, "spoken colour", "speech",
                 options(rng, o.color, list(COLORS)), media=["audio"])]


def caption_rows(scene: Scene, rng: np.random.Generator) -> list[Row]:
    """One picture and its World caption (the reference)."""
    return [{"answer": caption(scene, rng)[0], "category": f"{len(scene.objects)} objects", "media": ["image"]}]


def classification_rows(scene: Scene, rng: np.random.Generator) -> list[Row]:
    """A one-object picture labelled with its shape."""
    return [{"answer": scene.objects[0].shape, "category": "shape", "media": ["image"]}]


# name -> builder(scene, rng) -> rows
BUILDERS: dict[str, Callable[..., list[Row]]] = {
    "image_mcq": image_mcq, "image_yesno": image_yesno, "image_vqa": image_vqa, "table_mcq": table_mcq,
    "timeseries_mcq": timeseries_mcq, "video_mcq": video_mcq, "audio_mcq": audio_mcq,
    "caption": caption_rows, "classification": classification_rows,
}
