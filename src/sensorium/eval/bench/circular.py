"""The units a model is asked: one per item, or with CircularEval (MMBench) one per rotation of a multiple-choice
item's options. Rotation k puts the option that stood k places later under each letter; the copies are indexed
`base + k * 1e6` as in MMBench, and a question is right only if all of its rotations are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from sensorium.eval.bench.items import Item

ROTATION_STRIDE = 1_000_000


@dataclass(frozen=True)
class Unit:
    """One question as asked: its item, the options in the order shown (key -> text), the right key in that
    order, and the rotation (0 = as written)."""

    item: Item
    options: dict[str, str]
    answer: str
    rotation: int = 0

    @property
    def id(self) -> str:
        """MMBench's index of a rotated copy: index + k * 1e6 for numeric indexes, else `index@k`."""
        if not self.rotation:
            return self.item.index
        index = self.item.index
        return str(int(index) + self.rotation * ROTATION_STRIDE) if index.isdigit() else f"{index}@{self.rotation}"


def rotate(item: Item, k: int) -> Unit:
    """Rotation k of a multiple-choice item: letter i shows the text of the original option (i + k) mod N."""
    keys = list(item.options)
    texts = [item.options[key] for key in keys]
    n = len(keys)
    shown = {keys[i]: texts[(i + k) % n] for i in range(n)}
    answer = keys[(keys.index(item.answer) - k) % n]
    return Unit(item, shown, answer, k)


def units(items: Iterable[Item], circular: bool = False) -> list[Unit]:
    """Every unit to ask: each item once, or each rotation of it with `circular` (N rotations for N options)."""
    out = []
    for item in items:
        turns = len(item.options) if circular and item.options else 1
        out += [rotate(item, k) if item.options else Unit(item, {}, item.answer) for k in range(turns)]
    return out
