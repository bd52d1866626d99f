"""Training checkpoints: `step-XXXXXXX` state directories (core.files.save_state) under a run directory. Only
complete directories count (a `.tmp` being written, an `.old` being replaced or a `.damaged` one set aside never
do), and resume takes the newest one whose files match the sizes and hashes recorded at save."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from sensorium.core.files import CheckpointError, verify_directory

log = logging.getLogger(__name__)
STEP = re.compile(r"^step-(\d+)$")


def checkpoints(directory: str | Path) -> list[Path]:
    """The `step-N` checkpoint directories under `directory` that hold a state.json, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if STEP.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(STEP.match(p.name).group(1)))


def newest_valid(directory: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies, and the newer ones skipped with the reason each failed."""
    skipped: list[tuple[Path, str]] = []
    for path in reversed(checkpoints(directory)):
        try:
            verify_directory(path)
        except CheckpointError as exc:
            skipped.append((path, str(exc)))
            continue
        return path, skipped
    return None, skipped


def set_aside(path: Path, reason: str) -> Path:
    """Rename a damaged checkpoint to `<name>.damaged` (kept for inspection, never counted again)."""
    target = path.with_name(path.name + ".damaged")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged{n}")
    path.rename(target)
    log.warning("checkpoint %s is damaged (%s); set aside as %s", path, reason, target.name)
    return target


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The highest-step checkpoint under `directory` whose files verify, if any."""
    return newest_valid(directory)[0]
