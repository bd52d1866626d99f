"""Training checkpoints: `step-XXXXXXX` state directories (core.files.save_state) under a run directory."""

from __future__ import annotations

from pathlib import Path


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The highest-step `step-XXXXXXX` checkpoint under `directory`, if any."""
    directory = Path(directory)
    found = sorted(p for p in directory.glob("step-*") if (p / "state.json").exists()) if directory.exists() else []
    return found[-1] if found else None
