"""The persistent index as a user drives it: `sensorium index build|add|remove|info` and `sensorium search` on shards
laid out like the project's clipart shards, folders and manifests; any-to-any hits with exact scores; filters;
stable ids through add / update / remove; refusal of another model and of overwriting; HNSW against exact search;
a writer killed with SIGKILL half-way leaves the previous index readable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from _serve import aligned_model, png, wav, write_shard
from sensorium.cli import main
from sensorium.index import Index, IndexStateError, build, search, search_vectors
from sensorium.index.vectors import Allowed, Vectors

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    model = aligned_model(root / "model")
    shards = root / "shards"
    shards.mkdir()
    write_shard(shards / "part-000.tar")
    index = root / "idx"
    assert main(["-q", "index", "build", str(model), str(index), str(shards)]) == 0
    return root, model, shards, index


def _out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_build_reads_project_style_shards_into_items_of_every_modality(data, capsys):
    root, model, shards, index = data
    assert main(["-q", "index", "info", str(index), "--verify"]) == 0
    info = _out(capsys)
    assert info["items"] == 12 and info["by_modality"] == {"audio": 4, "image": 4, "text": 4}
    assert info["verified"] is True and info["search"] == "exact" and info["model"]["source"] == str(model.resolve())


def test_any_to_any_hits_are_exact_cosines(data):
    root, model, shards, index_dir = data
    index = Index.open(index_dir)
    text = search(index, "a blue square", k=3)
    assert text[0].record.title == "a blue square" and text[0].record.modality == "text"
    assert text[0].score == pytest.approx(1.0, abs=1e-5)  # the same text embeds to the same vector
    vectors = index.model.embed("text", ["a blue square", *(r.record.text for r in text[1:])]).numpy()
    assert [h.score for h in text[1:]] == pytest.approx((vectors[1:] @ vectors[0]).tolist(), abs=1e-5)
    by_image = search(index, {"image": png("green")}, k=2, modality="image")
    assert by_image[0].record.member.endswith(".png") and by_image[0].record.meta["colour"] == "green"
    assert by_image[0].score == pytest.approx(1.0, abs=1e-5) and by_image[1].score < by_image[0].score
    by_audio = search(index, {"audio": wav(300.0)}, k=1, modality="audio")  # the tone of sample 1 (green)
    assert by_audio[0].record.meta["colour"] == "green" and by_audio[0].score == pytest.approx(1.0, abs=1e-4)
    # an item of the index as the query: its own vector, so it comes first
    again = search(index, {"id": by_image[0].id}, k=1)
    assert again[0].id == by_image[0].id


def test_filters_on_modality_and_metadata(data, capsys):
    root, model, shards, index_dir = data
    index = Index.open(index_dir)
    hits = search(index, "a red square", k=10, modality="audio", where={"category": "cold"})
    assert len(hits) == 2 and {h.record.meta["colour"] for h in hits} == {"green", "blue"}
    assert all(h.record.modality == "audio" for h in hits)
    assert search(index, "a red square", k=5, where=["colour=nothing"]) == []
    with pytest.raises(ValueError, match="unknown modality 'smell'; this index holds audio, image, text"):
        search(index, "a red square", modality="smell")
    with pytest.raises(ValueError, match="bad metadata key"):
        search(index, "x", where={"a') OR 1=1 --": "x"})
    png_out = root / "grid.png"
    assert main(["-q", "search", str(index_dir), "a red square", "-k", "3", "--modality", "image",
                 "--png", str(png_out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith(("1", "2", "3"))]
    assert len(lines) == 3 and all(" image " in line for line in lines) and png_out.stat().st_size > 3000


def test_add_updates_in_place_and_remove_keeps_other_ids(data, tmp_path, capsys):
    root, model, shards, _ = data
    index_dir = tmp_path / "idx"
    build(model, index_dir, [shards], progress=False)
    before = {r.locator: r.id for r in map(Index.open(index_dir, load_model=False).get, range(1, 13))}
    more = tmp_path / "more"
    more.mkdir()
    (more / "purple.png").write_bytes(png("red", 48))
    (more / "purple.txt").write_text("a purple square")
    assert main(["-q", "index", "add", str(index_dir), str(more), str(shards)]) == 0
    report = _out(capsys)
    assert report["added"] == {"image": 1, "text": 1} and report["updated"] == 12 and report["items"] == 14
    index = Index.open(index_dir)
    assert {r.locator: r.id for r in map(index.get, before.values())} == before  # same ids after the update
    hit = search(index, "a purple square", k=1)[0]
    assert hit.record.title == "a purple square" and hit.id == 14 and hit.record.source == str((more / "purple.txt").resolve())
    assert main(["-q", "index", "remove", str(index_dir), str(hit.id), "--where", "colour=red"]) == 0
    assert _out(capsys)["removed"] == 4
    index = Index.open(index_dir)
    assert index.count == 10 and index.get(hit.id) is None
    assert all(h.record.meta.get("colour") != "red" for h in search(index, "a red square", k=10))
    assert {index.get(i).locator for i in before.values() if index.get(i)} <= set(before)


def test_build_refuses_to_overwrite_and_another_model(data, tmp_path, capsys):
    root, model, shards, index_dir = data
    assert main(["-q", "index", "build", str(model), str(index_dir), str(shards)]) == 1
    assert "already there; pass --overwrite" in capsys.readouterr().err
    other = aligned_model(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="built with .* not with other"):
        Index.open(index_dir, model=other)
    assert main(["-q", "search", str(index_dir), "a red square", "--model", str(other)]) == 1
    assert "search it with its own model or rebuild it" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.md").write_text("mine")
    with pytest.raises(IndexStateError, match="exists and is not an index"):
        build(model, tmp_path / "junk", [shards], progress=False)
    copy = tmp_path / "copy"
    build(model, copy, [shards], progress=False)
    assert main(["-q", "index", "build", str(model), str(copy), str(shards), "--overwrite", "--modality", "text"]) == 0
    assert _out(capsys)["by_modality"] == {"text": 4}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-built or old copies left


def test_manifest_and_folder_sources(data, tmp_path):
    root, model, _, _ = data
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "r.png").write_bytes(png("red"))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"image": "pics/r.png", "text": "a red square", "split": "a"}) + "\n"
                                         + json.dumps({"text": "just words", "split": "b"}) + "\n")
    index, report = build(model, tmp_path / "idx", [tmp_path / "rows.jsonl"], progress=False)
    assert index.meta.counts() == {"image": 1, "text": 2}
    hit = search(index, "just words", k=1)[0]
    assert hit.record.meta == {"split": "b", "row": 2} and hit.record.text == "just words"
    image = search(index, {"image": png("red")}, k=1, modality="image")[0]
    assert image.record.source == str((tmp_path / "pics" / "r.png").resolve()) and image.record.title == "a red square"
    with pytest.raises(ValueError, match="nothing to index"):
        build(model, tmp_path / "empty", [tmp_path / "pics"], modalities=["audio"], progress=False)
    assert not (tmp_path / "empty").exists()


def test_hnsw_matches_exact_search_with_and_without_filters(data, tmp_path, monkeypatch):
    root, model, shards, _ = data
    monkeypatch.setattr("sensorium.index.vectors.EXACT_FILTER_ROWS", 50)  # filters of 200+ rows go through HNSW
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32)).astype(np.float32)
    x = centres[rng.integers(0, 40, 3000)] + 0.35 * rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = Index.create(model, tmp_path / "ann", ann_threshold=1000)
    items = [{"modality": "image" if i % 3 else "text", "locator": f"v{i}", "meta": {"bucket": i % 5}}
             for i in range(3000)]
    index.add_vectors(x, items)
    assert index.update_graph(progress=False) and index.info()["search"] == "hnsw"
    index = index.finish()
    queries = x[rng.choice(3000, 50, replace=False)] + 0.1 * rng.standard_normal((50, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for modality, where, keep in ((None, None, np.ones(3000, bool)), ("image", None, np.arange(3000) % 3 > 0),
                                  ("text", {"bucket": "2"}, (np.arange(3000) % 3 == 0) & (np.arange(3000) % 5 == 2))):
        hits = search_vectors(index, queries, k=10, modality=modality, where=where)
        truth = np.argsort(-(queries @ x[keep].T), axis=1)[:, :10]
        ids = np.flatnonzero(keep)[truth] + 1  # ids were given in row order from 1
        recall = np.mean([len({h.id for h in row} & set(t)) / 10 for row, t in zip(hits, ids)])
        assert recall >= 0.95, (modality, where, recall)
        assert all(keep[h.id - 1] for row in hits for h in row)
        exact = np.sort(-(queries @ x[keep].T), axis=1)[:, :10]
        got = np.array([[h.score for h in row] for row in hits])
        assert np.all(got <= -exact[:, :1] + 1e-5)  # never better than the true best: scores are real cosines
    # more rows: searched exactly until the graphs are extended, found the same way after
    more = x[:200] + 0.05 * rng.standard_normal((200, 32)).astype(np.float32)
    more /= np.linalg.norm(more, axis=1, keepdims=True)
    writer = Index.open(tmp_path / "ann", load_model=False, readonly=False)
    new_ids = writer.add_vectors(more, [{"modality": "image", "locator": f"m{i}"} for i in range(200)])
    for extend in (False, True):
        if extend:
            assert writer.update_graph(progress=False, force=True)
            assert writer.info()["hnsw_rows"] == {"image": 2200, "text": 1000}
        top = [search_vectors(writer, more[i][None], k=1)[0][0] for i in range(0, 200, 20)]
        assert [h.id for h in top] == new_ids[::20] and all(h.score == pytest.approx(1.0, abs=1e-5) for h in top)
    # remove 40%: the graphs are rebuilt from the live rows at the next extension, removed items never come back
    gone = set(range(1, 1201))
    writer.remove(sorted(gone))
    assert writer.update_graph(progress=False, force=True)
    assert sum(writer.info()["hnsw_rows"].values()) == 3200 - 1200
    hits = search_vectors(writer, queries, k=10)
    assert not gone & {h.id for row in hits for h in row} and all(len(row) == 10 for row in hits)
    reader = Index.open(tmp_path / "ann", load_model=False)  # graphs memory-mapped read-only: the same answers
    assert [[h.id for h in row] for row in search_vectors(reader, queries, k=10)] == [[h.id for h in row] for row in hits]


def test_exact_and_segment_gather_agree(tmp_path):
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((n, 8)).astype(np.float32) for n in (5, 7)]
    segs, start = [], 0
    for i, part in enumerate(parts):
        np.save(tmp_path / f"s{i}.npy", part)
        segs.append({"file": f"s{i}.npy", "start": start, "count": len(part)})
        start += len(part)
    vectors = Vectors(tmp_path, 8, segs, None)
    allx = np.concatenate(parts)
    assert np.array_equal(vectors.gather(np.array([11, 0, 6])), allx[[11, 0, 6]])
    q = rng.standard_normal((2, 8)).astype(np.float32)
    mask = np.arange(12) % 2 == 1
    scores, rows = vectors.search(q, 3, Allowed(mask, int(mask.sum())))
    truth = np.argsort(-(q @ allx.T) + np.where(mask, 0, 1e9), axis=1)[:, :3]
    assert np.array_equal(rows, truth) and np.allclose(scores, np.take_along_axis(q @ allx.T, truth, 1))


def test_a_writer_killed_mid_add_leaves_the_previous_index(data, tmp_path):
    root, model, shards, _ = data
    index_dir = tmp_path / "idx"
    build(model, index_dir, [shards], progress=False)
    before = Index.open(index_dir, load_model=False).info()
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        from sensorium.index import Index
        index = Index.open({str(index_dir)!r}, load_model=False, readonly=False)
        with index._writing():
            for i in range(500):
                index.meta.upsert(100 + i, "text", f"killed-{{i}}", None, None, "x", "x", {{}}, None)
            index._append_segment(np.ones((500, 32), np.float32))
            print("inside", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        assert proc.stdout.readline().strip() == "inside"
        assert any(p.name.startswith("vectors-") for p in index_dir.iterdir())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    index = Index.open(index_dir)
    assert index.info()["items"] == before["items"] == 12 and index.info()["checksum"] == before["checksum"]
    assert index.verify()["verified"] and search(index, "a red square", k=1)[0].record.title == "a red square"
    writer = Index.open(index_dir, readonly=False)
    writer.remove([1])  # the next write works and clears the killed writer's orphan segment
    assert len([p for p in index_dir.iterdir() if p.name.startswith("vectors-")]) == 1
