"""One writer per run directory: `run_lock(dir)` holds an exclusive lock on `dir/.lock` (an OS file lock, so the
kernel frees it when its process dies: a lock left by a dead process is taken over). A second writer gets a
RunLocked error naming the holder's PID and command. The lock is re-entrant within one process; under torchrun only
rank 0 takes it (the other ranks of the same run write through it)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"
_held: dict[str, list[int]] = {}  # resolved lock path -> [fd, depth]


class RunLocked(RuntimeError):
    """Another live process is writing this run directory."""


def _holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(directory: str | Path) -> None:
    """Take the run directory's lock (or deepen this process's hold on it); RunLocked if another process has it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if os.environ.get("RANK", "0") != "0":  # under torchrun the rank-0 process holds the run's lock for all ranks
        return
    path = (directory / LOCK_NAME).resolve()
    key = str(path)
    if key in _held:
        _held[key][1] += 1
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            info = _holder(path)
            who = f"PID {info['pid']}" if "pid" in info else "another process"
            what = f" ({info['command']}, since {info.get('started', '?')})" if info.get("command") else ""
            raise RunLocked(f"{directory} is in use by {who}{what}: one run directory takes one writer. Wait for it "
                            f"to finish or stop it, or use another run directory") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino  # the file we locked is still the lock file
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _holder(path)
    if stale.get("pid") and stale["pid"] != os.getpid() and not _alive(int(stale["pid"])):
        log.info("%s: took over the lock of PID %s, which is no longer running", directory, stale["pid"])
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(["sensorium", *sys.argv[1:]])
            if sys.argv and sys.argv[0].endswith(("sensorium", "__main__.py")) else " ".join(sys.argv),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _held[key] = [fd, 1]


def release(directory: str | Path) -> None:
    """Undo one `acquire`; the last one removes the lock file and frees the lock."""
    key = str((Path(directory) / LOCK_NAME).resolve())
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] > 0:
        return
    fd, _ = _held.pop(key)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(key)  # while still locked: a waiter that opened the old file sees it is gone and retries
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def run_lock(directory: str | Path) -> Iterator[None]:
    """Hold the run directory's lock for the duration of the block."""
    acquire(directory)
    try:
        yield
    finally:
        release(directory)
