"""Progress of long work. On a terminal: a tqdm bar with total, rate and ETA. Logged to a file or a pipe: one plain
line every ~10% of the total or every 30 s (whichever comes first), never carriage-return fragments, so a log of
a whole quick start stays short and readable."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class PlainProgress:
    """tqdm's interface (iterate, update, set_postfix, close, context manager) printing plain lines."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, stream: TextIO | None = None, every_s: float = 30.0,
                 **_: Any):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start_n = initial
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.started = self.last_time = time.perf_counter()
        self.last_decile = self._decile()
        self.postfix = ""
        self.closed = False

    def _decile(self) -> int:
        return int(10 * self.n / self.total) if self.total else 0

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            left = (self.total - self.n) / rate if rate > 0 else float("inf")
            eta = _duration(left) if left != float("inf") else "?"
            text = (f"{head}{self.n:,}/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%), "
                    f"{rate:,.1f} {self.unit}/s, elapsed {_duration(elapsed)}, ETA {eta}")
        else:
            text = f"{head}{self.n:,} {self.unit}, {rate:,.1f} {self.unit}/s, elapsed {_duration(elapsed)}"
        return text + (f" [{self.postfix}]" if self.postfix else "")

    def _maybe_print(self, force: bool = False) -> None:
        now = time.perf_counter()
        decile = self._decile()
        if force or decile > self.last_decile or now - self.last_time >= self.every_s:
            print(self.line(), file=self.stream, flush=True)
            self.last_time, self.last_decile = now, decile

    def update(self, n: int = 1) -> None:
        self.n += n
        self._maybe_print()

    def set_postfix(self, values: dict[str, Any] | None = None, **kwargs: Any) -> None:
        items = {**(values or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("PlainProgress without an iterable: call update()")
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def close(self) -> None:
        if not self.closed and self.n != self.start_n:
            self._maybe_print(force=self.last_decile < 10 or time.perf_counter() - self.last_time > 1)
        self.closed = True

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent(PlainProgress):
    def _maybe_print(self, force: bool = False) -> None:
        pass


def interactive() -> bool:
    """Whether progress goes to a terminal (SENSORIUM_PROGRESS=plain|bar overrides the guess)."""
    forced = os.environ.get("SENSORIUM_PROGRESS", "").lower()
    if forced in ("plain", "bar"):
        return forced == "bar"
    return sys.stderr.isatty()


def progress_bar(iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, initial: int = 0, **kwargs: Any) -> Any:
    """A progress reporter for `iterable` (or for `update()` calls): tqdm on a terminal, plain lines elsewhere,
    nothing when `disable`."""
    if disable:
        return _Silent(iterable, total=total, desc=desc, unit=unit, initial=initial)
    if interactive():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, **kwargs)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
