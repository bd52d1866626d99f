"""World shards: byte-identical for the same seed (whatever the worker count), the CLI, and `data inspect` with
its contact sheet."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sensorium import modalities
from sensorium.cli import main
from sensorium.data.inspect import HEADER, PAD, contact_sheet, inspect, sheet_columns
from sensorium.data.shards import iter_samples
from sensorium.data.world import WorldConfig, write_world

MODS = ("image", "depth", "segmentation", "text", "qa", "video", "timeseries", "tabular")


def _bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".tar", ".json")}


def test_same_seed_gives_byte_identical_shards(tmp_path):
    a = write_world(tmp_path / "a", 12, "train", 3, WorldConfig(texture=True, clutter=2, noise=0.02), MODS,
                    shard_size=5, progress=False)
    write_world(tmp_path / "b", 12, "train", 3, WorldConfig(texture=True, clutter=2, noise=0.02), MODS,
                shard_size=5, workers=2, progress=False)
    c = write_world(tmp_path / "c", 12, "train", 4, WorldConfig(texture=True, clutter=2, noise=0.02), MODS,
                    shard_size=5, progress=False)
    assert list(a["shards"]) == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    assert a["shards"] != c["shards"]
    assert a["members"] == {ext: 12 for ext in ("png", "depth.png", "seg.png", "txt", "qa.json", "video.png",
                                                "ts.npy", "row.json", "json")}


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_speech_is_deterministic_too(tmp_path):
    write_world(tmp_path / "a", 2, "val", 0, WorldConfig(), ("text", "audio"), progress=False)
    write_world(tmp_path / "b", 2, "val", 0, WorldConfig(), ("text", "audio"), progress=False)
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")


def test_shards_read_back_as_the_generated_samples(tmp_path):
    write_world(tmp_path, 6, "comp-test", 0, WorldConfig(), MODS, shard_size=4, progress=False)
    samples = list(iter_samples(tmp_path))
    assert [s["__key__"] for s in samples] == [f"comp-test-{i:08d}" for i in range(6)]
    for s in samples:
        assert set(MODS) <= set(s) and s["json"]["held_out"]
        assert np.array_equal(np.unique(s["segmentation"])[1:], [o["id"] for o in s["json"]["objects"]])
    summary = json.loads((tmp_path / "world-comp-test.json").read_text())
    assert summary["n"] == 6 and len(summary["held_out_combos"]) == 8


def test_rerun_refuses_to_mix_with_old_shards(tmp_path):
    write_world(tmp_path, 3, "train", 0, WorldConfig(), ("text",), shard_size=1, progress=False)
    with pytest.raises(ValueError, match="overwrite"):
        write_world(tmp_path, 2, "train", 0, WorldConfig(), ("text",), progress=False)
    write_world(tmp_path, 2, "train", 0, WorldConfig(), ("text",), progress=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["train-000000.tar"]


def test_cli_world_then_inspect(tmp_path, capsys):
    out = tmp_path / "world"
    assert main(["-q", "data", "world", "--n", "5", "--out", str(out), "--modalities", "image,text,qa,depth",
                 "--seed", "2", "--split", "val", "--image-size", "32", "--quiet"]) == 0
    assert "wrote 5 val samples" in capsys.readouterr().out
    sheet = tmp_path / "sheet.png"
    assert main(["-q", "data", "inspect", str(out), "--sheet", str(sheet), "--n", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 5 and report["modalities"] == {"image": 5, "text": 5, "depth": 5, "qa": 5}
    image = Image.open(sheet)
    # two thumbnail columns (image, depth), 3 rows
    assert image.size == (PAD + 2 * (96 + PAD) + 380, HEADER + 3 * (96 + PAD))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "world", "--n", "2", "--out", str(tmp_path), "--modalities", "image,smell"]) == 1
    assert "World cannot make ['smell']" in capsys.readouterr().err


def test_contact_sheet_shows_what_it_claims(tmp_path):
    write_world(tmp_path, 4, "train", 0, WorldConfig(), ("image", "segmentation", "text"), progress=False)
    samples = list(iter_samples(tmp_path))
    del samples[1]["image"]  # a sample missing a modality gets a labelled empty box, not a crash
    path = contact_sheet(samples, tmp_path / "sheet.png", thumb=64, text_width=200)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    assert sheet.shape == (HEADER + 4 * (64 + PAD), PAD + 2 * (64 + PAD) + 200, 3)
    assert sheet_columns(samples) == ["image", "segmentation"]
    # the first thumbnail is the sample's own 64 px image, pixel for pixel; the second its segmentation preview
    top, left = HEADER, PAD
    assert np.array_equal(sheet[top:top + 64, left:left + 64], np.asarray(samples[0]["image"]))
    seg_preview = np.asarray(modalities.get("segmentation").preview(samples[0]["segmentation"]))
    assert np.array_equal(sheet[top:top + 64, left + 64 + PAD:left + 128 + PAD], seg_preview)
    # the missing image's box is not the image: mostly white
    box = sheet[HEADER + 64 + PAD:HEADER + 2 * 64 + PAD, left:left + 64]
    assert (box == 255).mean() > 0.8
    report = inspect(tmp_path, None)
    assert report["samples"] == 4 and "contact_sheet" not in report
