"""Readers: JSONL/CSV manifests, COCO captions, class folders and shards, with their bad-input rules."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from sensorium import modalities
from sensorium.data.formats import (CocoSource, FolderSource, ManifestSource, ShardSource, iter_source,
                                    open_source)
from sensorium.data.shards import ShardWriter, SkipLog
from sensorium.modalities import DecodeError, Waveform


def _png(path, colour=(255, 0, 0), size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _wav(path, seconds=0.1):
    _, data = modalities.get("audio").encode(Waveform(np.zeros(int(16000 * seconds), np.float32)))
    path.write_bytes(data)
    return path


def test_jsonl_manifest_resolves_relative_paths_and_inline_values(tmp_path):
    _png(tmp_path / "imgs" / "a.png")
    _wav(tmp_path / "a.wav")
    (tmp_path / "notes.txt").write_text("from a file")
    rows = [{"image": "imgs/a.png", "text": "a red square", "label": 2, "id": "x1"},
            {"audio": str(tmp_path / "a.wav"), "text_file": "notes.txt", "qa": [{"question": "q", "answer": "a",
                                                                                  "type": "t"}]},
            {"text": "caption only", "tabular": {"age": 3}}]
    manifest = tmp_path / "data.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    samples = list(iter_source(ManifestSource(manifest)))
    assert len(samples) == 3
    assert samples[0]["image"].size == (8, 8) and samples[0]["text"] == "a red square"
    assert samples[0]["label"] == 2 and samples[0]["json"] == {"label": 2, "id": "x1"}
    assert samples[1]["text"] == "from a file" and isinstance(samples[1]["audio"], Waveform)
    assert samples[1]["qa"][0]["answer"] == "a" and samples[2]["tabular"] == {"age": 3}
    assert "image" not in samples[2]


def test_manifest_missing_file_is_skipped_and_counted_or_strict(tmp_path):
    _png(tmp_path / "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "a.png", "text": "ok"}\n{"image": "gone.png", "text": "lost"}\n')
    skips = SkipLog()
    samples = list(iter_source(ManifestSource(manifest), skips))
    assert [s["text"] for s in samples] == ["ok"]
    assert skips.counts == {"missing_file": 1} and "m.jsonl:2" in skips.examples[0] and "gone.png" in skips.examples[0]
    with pytest.raises(DecodeError, match="gone.png"):
        list(iter_source(ManifestSource(manifest), SkipLog(strict=True)))


def test_csv_manifest_with_renamed_column_and_corrupt_file(tmp_path):
    _png(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with open(tmp_path / "m.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["image", "caption", "label"])
        writer.writeheader()
        writer.writerow({"image": "ok.png", "caption": "fine", "label": "1"})
        writer.writerow({"image": "bad.png", "caption": "broken picture", "label": "0"})
    skips = SkipLog()
    samples = list(iter_source(ManifestSource(tmp_path / "m.csv", columns={"caption": "text"}), skips))
    assert [s["text"] for s in samples] == ["fine", "broken picture"]
    assert "image" in samples[0] and "image" not in samples[1]  # the corrupt member is dropped, the row kept
    assert samples[0]["label"] == 1 and skips.counts == {"corrupt_image": 1}


def test_coco_captions_per_image_and_per_caption(tmp_path):
    _png(tmp_path / "images" / "1.png")
    _png(tmp_path / "images" / "2.png")
    coco = {"images": [{"id": 1, "file_name": "images/1.png"}, {"id": 2, "file_name": "images/2.png"},
                       {"id": 3, "file_name": "images/3.png"}],
            "annotations": [{"image_id": 1, "caption": "a red square"}, {"image_id": 1, "caption": "red block"},
                            {"image_id": 2, "caption": "another"}, {"image_id": 3, "caption": "missing"}]}
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(coco))
    skips = SkipLog()
    per_image = list(iter_source(CocoSource(path), skips))
    assert [s["text"] for s in per_image] == ["a red square", "another"]
    assert per_image[0]["json"]["captions"] == ["a red square", "red block"]
    assert skips.counts == {"missing_file": 1}
    per_caption = list(iter_source(CocoSource(path, per="caption")))
    assert [s["text"] for s in per_caption] == ["a red square", "red block", "another"]
    with pytest.raises(ValueError, match="not COCO"):
        bad = tmp_path / "bad.json"
        bad.write_text("[]")
        CocoSource(bad)


def test_class_folder_groups_files_by_stem(tmp_path):
    _png(tmp_path / "cat" / "001.png")
    (tmp_path / "cat" / "001.txt").write_text("a cat")
    _png(tmp_path / "cat" / "002.png")
    _png(tmp_path / "dog" / "sub" / "003.png")
    (tmp_path / "dog" / "README.md").write_text("ignored")
    source = FolderSource(tmp_path)
    samples = list(iter_source(source))
    assert source.classes == ["cat", "dog"]
    assert [(s["__key__"], s["label"]) for s in samples] == [("cat/001", 0), ("cat/002", 0), ("dog/sub/003", 1)]
    assert samples[0]["text"] == "a cat" and "text" not in samples[1]


def test_open_source_picks_the_reader(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "m.csv").write_text("text\nx\n")
    (tmp_path / "c.json").write_text('{"images": [], "annotations": []}')
    _png(tmp_path / "folder" / "a" / "1.png")
    with ShardWriter(tmp_path / "shards") as writer:
        writer.write({"__key__": "k", "text": "hello"})
    assert isinstance(open_source(tmp_path / "m.jsonl"), ManifestSource)
    assert isinstance(open_source(tmp_path / "m.csv"), ManifestSource)
    assert isinstance(open_source(tmp_path / "c.json"), CocoSource)
    assert isinstance(open_source(tmp_path / "folder"), FolderSource)
    assert isinstance(open_source(tmp_path / "shards"), ShardSource)
    assert [s["text"] for s in iter_source(open_source(str(tmp_path / "shards" / "shard-{000000..000000}.tar")))] \
        == ["hello"]


def test_manifest_units_cut_rows_for_workers(tmp_path):
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(10)))
    source = ManifestSource(tmp_path / "m.jsonl", items_per_unit=4)
    assert source.units() == ["m.jsonl#0", "m.jsonl#1", "m.jsonl#2"]
    assert [s["text"] for s in iter_source(source)] == [f"t{i}" for i in range(10)]
