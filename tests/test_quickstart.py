"""The main job end to end on a tiny slice of the real openclipart data (Debian's openclipart-svg)."""

import json
from pathlib import Path

import pytest

from sensorium.cli import main

pytestmark = pytest.mark.skipif(not Path("/usr/share/openclipart/svg").is_dir(),
                                reason="needs Debian's openclipart-svg (scripts/setup installs it)")


def test_quickstart_smoke(tmp_path, capsys):
    steps = [f"stages.{i}.train.{k}={v}" for i in (0, 1) for k, v in (("steps", 20), ("batch_size", 32), ("warmup", 5))]
    code = main(["-q", "quickstart", "--run", str(tmp_path / "run"), "--data", str(tmp_path / "data"),
                 "--limit", "48", *steps])
    assert code == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    built = json.loads((tmp_path / "data" / "report.json").read_text())
    assert built["written"] == sum(built["splits"].values()) > 30
    assert report["n"] == built["splits"]["test"]
    assert {"text->image", "image->text", "audio->image", "audio->text"} <= set(report["retrieval"])
    assert set(report["baselines"]) == {"ridge", "cca"}
    for png in ("loss_curve.png", "retrieval_text_to_image.png", "retrieval_audio_to_image.png"):
        assert (tmp_path / "run" / png).stat().st_size > 5000
    out = capsys.readouterr().out
    assert "text->image" in out and "chance R@10" in out
    assert "(built," in out and main(["-q", "search", str(tmp_path / "run" / "index"), "a red apple", "-k", "2"]) == 0
    assert len([line for line in capsys.readouterr().out.splitlines() if line.strip()]) == 2
    # a second run resumes: the stages are complete, nothing is retrained, the report is rewritten
    assert main(["-q", "quickstart", "--run", str(tmp_path / "run"), "--data", str(tmp_path / "data"),
                 "--limit", "48", *steps]) == 0
    out = capsys.readouterr().out
    assert "using the openclipart shards" in out and "(up to date," in out
