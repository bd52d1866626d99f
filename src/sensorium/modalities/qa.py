"""Question-answer pairs: a list of `{"question", "answer", "type", ...}` dicts about the sample, stored as
`x.qa.json` (and allowed inline in manifest cells). `type` names the question family for per-type scores."""

from __future__ import annotations

import json
from typing import Any

from sensorium.modalities.registry import DecodeError, Modality, register

REQUIRED = ("question", "answer", "type")


def _decode(data: bytes, ext: str) -> list[dict[str, Any]]:
    try:
        pairs = json.loads(data)
    except ValueError as exc:
        raise DecodeError(f"qa is not JSON ({exc})") from None
    if isinstance(pairs, dict):
        pairs = [pairs]
    if not isinstance(pairs, list) or not pairs:
        raise DecodeError("qa must be a non-empty JSON list of {question, answer, type} objects")
    for i, pair in enumerate(pairs):
        missing = [key for key in REQUIRED if not isinstance(pair, dict) or key not in pair]
        if missing:
            raise DecodeError(f"qa item {i} lacks {missing}")
    return pairs


def _encode(value: list[dict[str, Any]]) -> tuple[str, bytes]:
    return "qa.json", json.dumps(value, sort_keys=True).encode("utf-8")


QA = register(Modality("qa", ("qa.json",), _decode, _encode, description="question-answer pairs tagged by type",
                       metadata={"inline": True}))
