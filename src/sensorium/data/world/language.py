"""Language from the scene graph: captions with varied templates and spatial relations, motion captions, and
Sort-of-CLEVR question-answer pairs (non-relational: colour, shape, position; relational: closest, furthest,
count), each tagged with its type. Every fact is computed from object coordinates, never from pixels."""

from __future__ import annotations

from typing import Any

import numpy as np

from sensorium.data.world.scene import SHAPES, Obj, Scene

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight")
REGIONS = (("top left", "top", "top right"), ("left", "centre", "right"), ("bottom left", "bottom", "bottom right"))
QUESTION_TYPES: dict[str, str] = {"color": "non-relational", "shape": "non-relational", "position": "non-relational",
                                  "closest": "relational", "furthest": "relational", "count": "relational",
                                  "motion": "motion"}


def region(obj: Obj) -> str:
    """Which ninth of the picture holds the object's centre."""
    return REGIONS[min(2, int(obj.y * 3))][min(2, int(obj.x * 3))]


def where(obj: Obj) -> str:
    """A natural prepositional phrase for the object's region."""
    name = region(obj)
    if name == "centre":
        return "in the centre"
    if name in ("top", "bottom"):
        return f"at the {name}"
    if name in ("left", "right"):
        return f"on the {name}"
    return f"in the {name}"


def relation(a: Obj, b: Obj) -> str:
    """Where a is relative to b along the axis that separates them most: left of / right of / above / below."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def describe(obj: Obj, article: str = "a") -> str:
    """'a large striped red circle' (the texture only when it is not plain)."""
    texture = "" if obj.texture == "plain" else f"{obj.texture} "
    return f"{article} {obj.size} {texture}{obj.color} {obj.shape}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _pairs(scene: Scene, rng: np.random.Generator, count: int) -> list[tuple[Obj, Obj]]:
    objs = scene.objects
    if len(objs) < 2:
        return []
    picks = []
    for _ in range(count):
        i, j = rng.choice(len(objs), size=2, replace=False)
        picks.append((objs[int(i)], objs[int(j)]))
    return picks


def caption(scene: Scene, rng: np.random.Generator) -> tuple[str, list[dict[str, Any]]]:
    """A scene caption from one of several templates, and the spatial relations it states (for checking)."""
    objs = list(scene.objects)
    order = [objs[int(k)] for k in rng.permutation(len(objs))]
    pairs = _pairs(scene, rng, int(rng.integers(1, 3)))
    relations = [{"subject": a.id, "relation": relation(a, b), "object": b.id} for a, b in pairs]
    rel_text = " ".join(f"The {a.name} is {relation(a, b)} the {b.name}." for a, b in pairs)
    listing = _join([f"{describe(o)} {where(o)}" for o in order])
    n = len(objs)
    if n == 1:
        only = order[0]
        text = str(rng.choice([f"A single {describe(only, '')[1:]} {where(only)}.",
                               f"There is only {describe(only)}, {where(only)}.",
                               f"Just one object: {describe(only)} {where(only)}."]))
        return text, []
    template = int(rng.integers(4))
    if template == 0:
        text = f"There are {NUMBER_WORDS[n]} objects: {listing}."
    elif template == 1:
        text = f"The picture shows {listing}."
    elif template == 2:
        text = f"{NUMBER_WORDS[n].capitalize()} shapes: {listing}."
    else:
        text = f"You can see {_join([describe(o) for o in order])}."
    return f"{text} {rel_text}".strip(), relations


def motion_caption(scene: Scene, rng: np.random.Generator) -> str:
    """'The red circle moves up.' in one of several phrasings."""
    obj, direction = scene.obj(scene.motion.object_id), scene.motion.direction
    adverb = {"up": "upwards", "down": "downwards", "left": "to the left", "right": "to the right"}[direction]
    return str(rng.choice([f"The {obj.name} moves {direction}.", f"The {obj.name} slides {adverb}.",
                           f"Only the {obj.name} moves: it goes {direction}.",
                           f"Watch the {obj.name} travel {adverb}."]))


def _distances(scene: Scene, ref: Obj) -> list[tuple[float, Obj]]:
    pairs = [(float(np.hypot(o.x - ref.x, o.y - ref.y)), o) for o in scene.objects if o.id != ref.id]
    return sorted(pairs, key=lambda pair: (pair[0], pair[1].id))


def _ask(qtype: str, question: str, answer: str | int, subject: Obj | None) -> dict[str, Any]:
    return {"question": question, "answer": str(answer), "type": qtype, "family": QUESTION_TYPES[qtype],
            "object": subject.id if subject else None}


def _question(qtype: str, scene: Scene, rng: np.random.Generator) -> dict[str, Any] | None:
    """One question of a type, or None where the scene cannot pose it (e.g. 'closest' with one object)."""
    ref = scene.objects[int(rng.integers(len(scene.objects)))]
    if qtype == "shape":
        return _ask(qtype, str(rng.choice([f"What shape is the {ref.color} object?",
                                           f"Which shape has the colour {ref.color}?"])), ref.shape, ref)
    if qtype == "color":
        shapes = [o.shape for o in scene.objects]
        unique = [o for o in scene.objects if shapes.count(o.shape) == 1]
        if not unique:
            return None
        target = unique[int(rng.integers(len(unique)))]
        return _ask(qtype, str(rng.choice([f"What colour is the {target.shape}?",
                                           f"Which colour does the {target.shape} have?"])), target.color, target)
    if qtype == "position":
        if rng.integers(2):
            return _ask(qtype, f"Is the {ref.color} object on the left or the right?",
                        "left" if ref.x < 0.5 else "right", ref)
        return _ask(qtype, f"Is the {ref.color} object at the top or the bottom?", "top" if ref.y < 0.5 else "bottom", ref)
    if qtype in ("closest", "furthest"):
        if len(scene.objects) < 2:
            return None
        ranked = _distances(scene, ref)
        other = ranked[0][1] if qtype == "closest" else ranked[-1][1]
        word = {"closest": str(rng.choice(["closest", "nearest"])), "furthest": str(rng.choice(["furthest", "farthest"]))}
        attribute = str(rng.choice(["shape", "colour"]))
        answer = other.shape if attribute == "shape" else other.color
        return _ask(qtype, f"What is the {attribute} of the object {word[qtype]} {'to' if qtype == 'closest' else 'from'} the {ref.color} object?", answer, ref)
    if qtype == "count":
        if rng.integers(2):
            shape = str(rng.choice(SHAPES))
            return _ask(qtype, f"How many {shape}s are there?", sum(o.shape == shape for o in scene.objects), None)
        return _ask(qtype, f"How many objects have the same shape as the {ref.color} object?",
                    sum(o.shape == ref.shape for o in scene.objects), ref)
    if qtype == "motion":
        mover = scene.obj(scene.motion.object_id)
        return _ask(qtype, str(rng.choice(["Which object moves?", "What is moving?"])), mover.name, mover) \
            if rng.integers(2) else _ask(qtype, f"Which way does the {mover.color} object move?",
                                         scene.motion.direction, mover)
    raise ValueError(f"unknown question type {qtype!r}; known: {', '.join(QUESTION_TYPES)}")


def questions(scene: Scene, rng: np.random.Generator, types: tuple[str, ...] = tuple(QUESTION_TYPES)[:6],
              per_type: int = 1) -> list[dict[str, Any]]:
    """Sort-of-CLEVR questions: `per_type` of each type in `types` that the scene can pose."""
    out = []
    for qtype in types:
        for _ in range(per_type):
            item = _question(qtype, scene, rng)
            if item is not None:
                out.append(item)
    return out
