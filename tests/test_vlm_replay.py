"""Replay in the decoder recipe: a later stage mixes a share of an earlier stage's batches into its own, evenly
spread and in proportion, and a resumed stage sees exactly the batches it would have seen."""

from __future__ import annotations

from collections import Counter

import pytest

from sensorium.train.vlm import mixed_batches


def _stream(tag):
    def iterate(step):
        while True:
            yield tag, step
            step += 1
    return iterate


def test_replay_shares_are_exact_spread_and_resumable():
    batches = mixed_batches(_stream("qa"), {"captions": (0.25, _stream("captions")), "count": (0.1, _stream("count"))})
    run = batches(0)
    seq = [next(run) for _ in range(200)]
    assert Counter(tag for tag, _ in seq) == {"qa": 130, "captions": 50, "count": 20}
    for tag in ("qa", "captions", "count"):  # each stream's batches in order, none skipped or repeated
        assert [n for t, n in seq if t == tag] == list(range(sum(t == tag for t, _ in seq)))
    assert max(len(list(g)) for g in _runs([t == "qa" for t, _ in seq])) <= 3  # never long stretches without replay
    resumed = batches(77)
    assert [next(resumed) for _ in range(123)] == seq[77:]


def _runs(flags):
    run: list = []
    for f in flags:
        if f:
            run.append(f)
        elif run:
            yield run
            run = []
    if run:
        yield run


@pytest.mark.parametrize("shares", [{"a": (0.0, None)}, {"a": (0.6, None), "b": (0.5, None)}])
def test_replay_shares_must_leave_room_for_the_stage(shares):
    with pytest.raises(ValueError, match="must be > 0 and sum to less than 1"):
        mixed_batches(_stream("qa"), shares)
