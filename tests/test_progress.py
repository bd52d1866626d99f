"""Progress in logs: plain lines every ~10% (or 30 s), each with the count, the total, a rate and an ETA; never
carriage returns. On a terminal it is tqdm's bar (not tested here)."""

from __future__ import annotations

import io

from sensorium.core.progress import PlainProgress, progress_bar


def test_plain_lines_every_tenth_with_total_and_eta():
    out = io.StringIO()
    bar = PlainProgress(total=1000, desc="features", unit="sample", stream=out)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()
    assert lines[0].startswith("features: 100/1,000 sample (10%)") and "ETA" in lines[0]
    assert lines[-1].startswith("features: 1,000/1,000 sample (100%)")


def test_iterating_counts_and_closes_once():
    out = io.StringIO()
    items = list(PlainProgress(range(25), desc="x", stream=out))
    assert items == list(range(25))
    assert out.getvalue().splitlines()[-1].startswith("x: 25/25 it (100%)")
    assert len(out.getvalue().splitlines()) == 10


def test_unknown_total_prints_by_time_and_at_the_end():
    out = io.StringIO()
    bar = PlainProgress(desc="reading", unit="file", stream=out, every_s=3600)
    bar.update(7)
    bar.close()
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert out.getvalue().startswith("reading: 7 file, ")


def test_disabled_prints_nothing(capsys, monkeypatch):
    monkeypatch.setenv("SENSORIUM_PROGRESS", "plain")
    for _ in progress_bar(range(5), desc="quiet", disable=True):
        pass
    for _ in progress_bar(range(5), desc="loud"):
        pass
    err = capsys.readouterr().err
    assert "quiet" not in err and "loud: 5/5" in err
