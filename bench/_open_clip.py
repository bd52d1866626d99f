"""open_clip for the benches, imported from wherever it is installed (not a Sensorium dependency), with a
stand-in for the `regex` package when that is missing."""

from __future__ import annotations

import sys
from typing import Any


def _regex_stand_in() -> Any:
    """A `regex` module made of `re`: patterns that only the regex package can compile (open_clip's tokenizer
    uses \\p{L}) compile to None. Enough to import open_clip; the bench feeds token ids, never tokenizes."""
    import re
    import types

    stub = types.ModuleType("regex")
    stub.__dict__.update({k: v for k, v in vars(re).items() if not k.startswith("__")})

    def compile_(pattern: str, flags: int = 0):
        try:
            return re.compile(pattern, flags)
        except re.error:
            return None
    stub.compile = compile_
    return stub


def import_open_clip() -> tuple[Any, str | None]:
    """open_clip, or None and why not (only the open_clip rows are then skipped)."""
    try:
        import open_clip

        return open_clip, None
    except ModuleNotFoundError as err:
        if err.name != "regex":
            return None, f"{type(err).__name__}: {err}"
    except Exception as err:  # noqa: BLE001 - any import failure only disables the open_clip rows
        return None, f"{type(err).__name__}: {err}"
    sys.modules["regex"] = _regex_stand_in()
    for name in [m for m in sys.modules if m == "open_clip" or m.startswith("open_clip.")]:
        del sys.modules[name]
    try:
        import open_clip

        return open_clip, "the regex package is missing: a stand-in built on re (the tokenizer is unused)"
    except Exception as err:  # noqa: BLE001
        return None, f"{type(err).__name__}: {err}"
