"""Tabular rows: one record as a flat `{column: str | int | float | bool | None}` dict, stored as `x.row.json`
(and allowed inline in manifest cells). Batches keep rows as a list of dicts; models choose their own schema."""

from __future__ import annotations

import json
from typing import Any

from sensorium.modalities.registry import DecodeError, Modality, register

SCALARS = (str, int, float, bool, type(None))


def _decode(data: bytes, ext: str) -> dict[str, Any]:
    try:
        row = json.loads(data)
    except ValueError as exc:
        raise DecodeError(f"tabular row is not JSON ({exc})") from None
    if not isinstance(row, dict):
        raise DecodeError(f"a tabular row must be a JSON object, got {type(row).__name__}")
    bad = sorted(key for key, value in row.items() if not isinstance(value, SCALARS))
    if bad:
        raise DecodeError(f"tabular row columns {bad} are not scalars (str/number/bool/null)")
    return row


def _encode(value: dict[str, Any]) -> tuple[str, bytes]:
    return "row.json", json.dumps(value, sort_keys=True).encode("utf-8")


TABULAR = register(Modality("tabular", ("row.json",), _decode, _encode, description="one record of scalar columns",
                            metadata={"inline": True}, tokenizer="features"))
