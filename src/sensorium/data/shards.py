"""WebDataset shards: expand shard specs, write samples, read samples grouped by key and decoded through
the modality registry. Bad members are skipped with a warning naming shard and key (or raise with strict)."""

from __future__ import annotations

import glob
import json
import logging
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import webdataset as wds
from braceexpand import braceexpand

from sensorium import modalities
from sensorium.modalities import DecodeError

log = logging.getLogger(__name__)


class ShardError(RuntimeError):
    """A shard cannot be read at all (missing, not a tar, path escaping its root)."""


@dataclass
class SkipLog:
    """What was dropped while reading data, counted in samples: `counts[reason]` is how many samples a reason
    affected (one sample with a corrupt image and a corrupt audio clip counts once per reason and once in
    `total`). A shard that is unreadable or cut short hides samples nobody can count: it is listed in `uncounted`
    and the totals are lower bounds. `strict` turns the first problem into an error. The first 20 problems are
    logged one by one, the rest counted quietly."""

    strict: bool = False
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    affected: set = field(default_factory=set)  # samples (shard:key) with at least one problem
    uncounted: list[str] = field(default_factory=list)  # shards whose lost samples cannot be counted
    _seen: set = field(default_factory=set, repr=False)

    def skip(self, reason: str, where: str, detail: str = "", samples: int = 1, uncounted: str | None = None) -> None:
        """Count a problem at `where` (a sample key, or a shard for shard-level problems) affecting `samples`
        samples; `uncounted`: the shard in which more samples were lost than anyone can tell (unreadable or cut
        short)."""
        message = f"{where}: {detail or reason}"
        if self.strict:
            raise DecodeError(message)
        self.record(reason, message, where, samples)
        if uncounted and uncounted not in self.uncounted:
            self.uncounted.append(uncounted)

    def record(self, reason: str, message: str, where: str, samples: int = 1, quiet: bool = False) -> None:
        """Count a problem once per (reason, sample), logging the first 20 (unless `quiet`)."""
        if (reason, where) in self._seen:
            return
        self._seen.add((reason, where))
        self.counts[reason] += samples
        self.affected.update({where} if samples == 1 else {f"{where}#{i}" for i in range(samples)})
        if len(self.examples) < 20:
            self.examples.append(message)
            if not quiet:
                log.warning("skipped %s", message)
        elif len(self.examples) == 20:
            self.examples.append("...")
            if not quiet:
                log.warning("more skipped samples: counted, not logged one by one")

    def has(self, reason: str, where: str) -> bool:
        """Whether `reason` was already counted for the sample at `where`."""
        return (reason, where) in self._seen

    def merge(self, reason: str, message: str, where: str, samples: int = 1, uncounted: str | None = None) -> None:
        """Count a problem another process (or a worker's own log) reported and logged; it raised if strict."""
        self.record(reason, message, where, samples, quiet=True)
        if uncounted and uncounted not in self.uncounted:
            self.uncounted.append(uncounted)

    @property
    def total(self) -> int:
        """Samples affected (a lower bound when `uncounted` names shards)."""
        return len(self.affected)

    def as_dict(self) -> dict[str, Any]:
        out = {"total": self.total, "by_reason": dict(self.counts), "examples": [e for e in self.examples if e != "..."]}
        if self.uncounted:
            out["uncounted_shards"] = list(self.uncounted)  # unreadable or cut short: totals are lower bounds
        return out


def count_missing(lacking: dict[str, list[str]], n: int, skips: SkipLog) -> None:
    """Count samples that lack a member other samples of the same data have (`missing_<modality>`; an error with
    a strict SkipLog). A modality no sample has is not a per-sample problem: it is logged once."""
    for modality, where in lacking.items():
        if len(where) == n:
            log.warning("no sample has a %s member", modality)
            continue
        for key in where:
            if not skips.has(f"corrupt_{modality}", key):  # a corrupt member is counted as corrupt already
                skips.skip(f"missing_{modality}", key, f"no {modality} member")


def expand_shards(spec: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Turn a directory, glob, brace pattern (`train-{000..009}.tar`) or list of those into tar paths."""
    if not isinstance(spec, (str, os.PathLike)):
        return [p for item in spec for p in expand_shards(item)]
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        found = sorted(path.rglob("*.tar"))
        if not found:
            raise ShardError(f"{path}: directory holds no .tar shards")
        return found

    out: list[Path] = []
    for pattern in braceexpand(text):
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        for match in matches:
            if not Path(match).is_file():
                raise ShardError(f"{match}: shard not found")
            out.append(Path(match))
    if not out:
        raise ShardError(f"{text}: no shards match")
    return out


def split_key(member_name: str) -> tuple[str, str]:
    """WebDataset convention: key is the path up to the first dot of the basename, the rest is the extension."""
    directory, base = os.path.split(member_name)
    if "." not in base:
        return member_name, ""
    stem, ext = base.split(".", 1)
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


def count_samples(shards: Iterable[Path]) -> int | None:
    """Distinct sample keys in the shards, from the tar headers alone (seeking past the data: cheap next to
    decoding), for progress totals; None if a shard cannot be listed (the reader reports it properly)."""
    total = 0
    for shard in shards:
        try:
            with tarfile.open(shard, "r:*") as tar:
                total += len({split_key(m.name)[0] for m in tar.getmembers() if m.isfile() and split_key(m.name)[1]})
        except (tarfile.TarError, OSError, EOFError):
            return None
    return total


def _unreadable(shard: Path, message: str, skips: SkipLog | None) -> None:
    if skips is None:
        raise ShardError(message)
    skips.skip("unreadable_shard", str(shard), message.removeprefix(f"{shard}: "), uncounted=str(shard))


def iter_raw(shard: Path, skips: SkipLog | None = None) -> Iterator[dict[str, Any]]:
    """Raw samples of one tar: `{"__key__", "__shard__", ext: bytes, ...}`, consecutive members grouped by key.

    Without `skips`, an unreadable shard, a member path outside the shard root or a damaged tar raises ShardError.
    With a SkipLog each is counted and reading goes on: an unreadable (empty, not a tar) shard is skipped; a
    damaged stretch inside a tar is stepped over (reading resumes at the next intact member header, and the
    samples it touched are counted); a tar cut short ends after its last complete sample (the lost rest cannot be
    counted: the shard is listed as uncounted)."""
    try:
        size = os.stat(shard).st_size
    except OSError as exc:
        return _unreadable(shard, f"{shard}: cannot be read ({exc.strerror or exc})", skips)
    if size == 0:
        return _unreadable(shard, f"{shard}: empty file (0 bytes), not a tar shard", skips)
    try:
        tar = tarfile.open(shard, "r|*", ignore_zeros=True)
    except (tarfile.TarError, OSError) as exc:
        return _unreadable(shard, f"{shard}: not a readable tar ({exc})", skips)
    current: dict[str, Any] | None = None
    expected = 0  # where the next member header should start
    end = 0  # where the last member's data ends
    with tar:
        try:
            for info in tar:
                if info.offset > expected:  # bytes stepped over: a damaged header or member
                    lost = f"{shard}:{current['__key__']}" if current else str(shard)
                    message = (f"damaged tar bytes {expected}..{info.offset} stepped over (a member lost; reading "
                               f"resumed at the next intact header)")
                    if skips is None:
                        raise ShardError(f"{shard}: {message}")
                    skips.skip("damaged_tar", lost, message)
                expected = end = info.offset_data + _blocks(info.size)
                if not info.isfile():
                    continue
                name = info.name
                if name.startswith("/") or ".." in Path(name).parts:
                    if skips is None:
                        raise ShardError(f"{shard}: member {name!r} points outside the shard root")
                    skips.skip("unsafe_path", f"{shard}:{name}", "member path points outside the shard root")
                    continue
                key, ext = split_key(name)
                if not ext:
                    continue
                handle = tar.extractfile(info)
                data = handle.read() if handle else b""
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key, "__shard__": str(shard)}
                current[ext] = data
        except (tarfile.TarError, EOFError, OSError) as exc:
            where = f"{shard}:{current['__key__']}" if current else str(shard)
            message = f"truncated or corrupt tar, rest of shard dropped ({exc})"
            if skips is None:
                raise ShardError(f"{shard}: {message}") from None
            skips.skip("truncated_shard", where, message, uncounted=str(shard))
            return
        if not tar.members and not _ends_cleanly(shard, 0, size):  # (an empty tar is just the end marker)
            return _unreadable(shard, f"{shard}: not a tar shard (no valid member header in {size} bytes)", skips)
        if not _ends_cleanly(shard, end, size):
            # Cut at a member boundary: tarfile stops quietly, but the last sample may be incomplete.
            where = f"{shard}:{current['__key__']}" if current else str(shard)
            message = f"truncated tar (no end-of-archive marker after byte {end} of {size})"
            if skips is None:
                raise ShardError(f"{shard}: {message}")
            skips.skip("truncated_shard", where, message, uncounted=str(shard))
            return
    if current is not None:
        yield current


def _blocks(size: int) -> int:
    return (size + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE


def _ends_cleanly(shard: Path, end: int, size: int) -> bool:
    """True when the bytes after the last member are the end-of-archive marker: at least two zero blocks."""
    if size - end < 2 * tarfile.BLOCKSIZE:
        return False
    with open(shard, "rb") as f:
        f.seek(end)
        tail = f.read(2 * tarfile.BLOCKSIZE)
    return not any(tail)


def decode_sample(raw: dict[str, Any], skips: SkipLog | None = None, want: Iterable[str] | None = None) -> dict[str, Any] | None:
    """Decode a raw sample's members via the registry. Returns `{"__key__", "__shard__", modality: value,
    "json": dict?}`; a member that fails to decode is dropped (and counted) or, with a strict SkipLog, raises."""
    skips = skips or SkipLog()
    wanted = set(want) if want is not None else None
    out: dict[str, Any] = {"__key__": raw["__key__"], "__shard__": raw["__shard__"]}
    where = f"{raw['__shard__']}:{raw['__key__']}"
    for ext, data in raw.items():
        if ext.startswith("__"):
            continue
        if ext == "json":
            try:
                out["json"] = json.loads(data)
            except ValueError as exc:
                skips.skip("bad_json", where, f".json member is not JSON ({exc})")
            continue
        modality = modalities.for_extension(ext)  # full multi-part ext first (x.depth.png), then shorter suffixes
        if modality is None or (wanted is not None and modality.name not in wanted):
            continue
        if modality.name in out:
            continue  # first member of a modality wins (e.g. both .png and .jpg)
        try:
            out[modality.name] = modality.decode(data, ext)
        except DecodeError as exc:
            skips.skip(f"corrupt_{modality.name}", where, f".{ext}: {exc}")
    return out


def iter_samples(spec: Any, *, want: Iterable[str] | None = None, skips: SkipLog | None = None) -> Iterator[dict[str, Any]]:
    """Decoded samples from shards, in shard order. `want` limits decoding to those modalities."""
    skips = skips or SkipLog()
    for shard in expand_shards(spec):
        for raw in iter_raw(shard, skips):
            sample = decode_sample(raw, skips, want)
            if sample is not None:
                yield sample


def encode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A sample (`{"__key__", modality: value | bytes, "json": dict}`) as tar members `{ext: bytes}` through the
    registry; bytes values are taken as already encoded, named by their extension. Safe to run in worker processes."""
    record: dict[str, Any] = {"__key__": sample["__key__"]}
    for name, value in sample.items():
        if name.startswith("__") or value is None:
            continue
        if isinstance(value, (bytes, bytearray)):
            record[name] = bytes(value)
        elif name == "json":
            record["json"] = json.dumps(value, sort_keys=True).encode("utf-8")
        else:
            ext, data = modalities.get(name).encode(value)
            record[ext] = data
    return record


class ShardWriter:
    """Write samples (`{"__key__": str, modality: value, "json": dict}`) into numbered tar shards via webdataset.

    Tar headers are fixed (mtime 0, owner `sensorium`, mode 0444), so the same samples give byte-identical
    shards on every run and machine."""

    def __init__(self, out_dir: str | os.PathLike, prefix: str = "shard", max_count: int = 1000):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._writer = wds.ShardWriter(str(self.out_dir / f"{prefix}-%06d.tar"), maxcount=max_count, verbose=0,
                                       mtime=0.0, user="sensorium", group="sensorium", mode=0o444)
        self.count = 0

    def write(self, sample: dict[str, Any]) -> None:
        self._writer.write(encode_sample(sample))
        self.count += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
