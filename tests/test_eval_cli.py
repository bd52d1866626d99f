"""`sensorium eval` on shards written by plain tarfile (no Sensorium involved), zero-shot folders (index and search:
tests/test_index.py)."""

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sensorium.cli import main
from sensorium.models.aligned import AlignedConfig, AlignedModel, HeadConfig

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def _image(colour, fmt="JPEG") -> bytes:
    img = Image.new("RGB", (64, 64), (255, 255, 255))
    img.paste(COLOURS[colour], (16, 16, 48, 48))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _flac(freq: float) -> bytes:
    t = np.arange(8000) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="FLAC")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def foreign_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    with tarfile.open(root / "part-0.tar", "w") as tar:
        for i, colour in enumerate(COLOURS):
            _add(tar, f"sample{i:03d}.jpg", _image(colour))
            _add(tar, f"sample{i:03d}.txt", f"a {colour} square".encode())
            if i % 2 == 0:
                _add(tar, f"sample{i:03d}.flac", _flac(200.0 + 100 * i))
        _add(tar, "broken001.jpg", b"not a jpeg at all")  # corrupt member: skipped and counted
        _add(tar, "broken001.txt", b"a broken square")
    return root / "part-0.tar"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    heads = {"image": HeadConfig(1280, 0), "text": HeadConfig(384, 0), "audio": HeadConfig(320, 0)}
    towers = {"image": "efficientnet-lite0", "text": "minilm-l6", "audio": "logmel-stats"}
    AlignedModel(AlignedConfig(dim=32, heads=heads, towers=towers)).save(run / "model")
    return run


def test_eval_reports_every_present_pair(foreign_shards, run_dir, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["-q", "eval", str(run_dir), "--data", str(foreign_shards), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 5
    pairs = set(report["retrieval"])
    assert {"text->image", "image->text", "audio->text", "text->audio", "audio->image", "image->audio"} == pairs
    for metrics in report["retrieval"].values():
        assert set(metrics) == {"R@1", "R@5", "R@10", "median_rank"}
        assert 0 <= metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"] <= 100
    assert report["pairs_n"]["audio->text"] == 2 and report["pairs_n"]["text->image"] == 4
    # samples, not events: broken001 (corrupt image, no audio), sample001 and sample003 (no audio member)
    assert report["skipped"]["by_reason"] == {"corrupt_image": 1, "missing_audio": 3}
    assert report["skipped"]["total"] == 3 and "broken001" in report["skipped"]["examples"][0]
    assert "text->image" in capsys.readouterr().out


def test_eval_strict_turns_the_skip_into_an_error(foreign_shards, run_dir, tmp_path, capsys):
    code = main(["eval", str(run_dir), "--data", str(foreign_shards), "--strict"])
    assert code == 1
    assert "broken001" in capsys.readouterr().err


def test_zero_shot_classification(run_dir, tmp_path):
    for colour in COLOURS:
        (tmp_path / "cls" / colour).mkdir(parents=True)
        for k in range(2):
            (tmp_path / "cls" / colour / f"{k}.png").write_bytes(_image(colour, "PNG"))
    out = tmp_path / "zs.json"
    assert main(["-q", "eval", str(run_dir), "--classify", str(tmp_path / "cls"), "--json", str(out)]) == 0
    c = json.loads(out.read_text())["classification"]
    assert c["n"] == 8 and c["classes"] == 4 and c["top5"] == 100.0 and c["chance_top1"] == 25.0


def test_missing_run_gives_a_clear_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--data", str(tmp_path)]) == 1
    assert "no trained model" in capsys.readouterr().err
