"""The World recipe end to end on a tiny image+text set (no speech, so it stays fast): data generated once and
reused, BPE trained, every retrieval direction and both zero-shot tasks reported, model saved and reloadable, a
second run resumes; plus the CLI wiring of `train unified` and `train symile-xor`, and content keys/prompts."""

from __future__ import annotations

import json

import pytest

from sensorium.cli import main
from sensorium.core.config import load_config
from sensorium.models.unified import UnifiedModel
from sensorium.train.unified import UnifiedRecipe, content_key, run_unified, world_prompts

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data.modalities=[image, text]", "data.n_train=40", "data.n_val=8", "data.n_test=16", "data.workers=1",
        "data.vocab_size=200", "train.steps=3", "train.batch_size=16", "train.warmup=1", "train.eval_every=2",
        "train.ckpt_every=3", "model.trunk.depth=1", "model.trunk.dim=32", "model.trunk.mlp_hidden=64",
        "model.embed_dim=16", "model.tokenizers.image.patch=16"]


def test_world_recipe_end_to_end_and_resume(tmp_path):
    overrides = [f"data.root={tmp_path / 'world'}", *TINY]
    recipe = load_config(UnifiedRecipe, None, overrides)
    recipe.model.tokenizers.pop("audio")
    report = run_unified(recipe, tmp_path / "run", progress=False)
    assert set(report["retrieval"]) == {"image->text", "text->image"}
    assert set(report["zero_shot"]) == {"shape", "color"} and report["zero_shot"]["color"]["chance"] == 12.5
    assert 0 <= report["zero_shot"]["shape"]["nearest_prompt_accuracy"] <= 100
    assert report["summary"]["steps"] == 3 and (tmp_path / "run" / "loss_curve.png").exists()
    model = UnifiedModel.load(tmp_path / "run" / "model")
    assert model.modalities == ["image", "text"]
    first_shards = sorted(p.stat().st_mtime for p in (tmp_path / "world").glob("*.tar"))
    recipe = load_config(UnifiedRecipe, None, [*overrides, "train.steps=5"])
    recipe.model.tokenizers.pop("audio")
    again = run_unified(recipe, tmp_path / "run", progress=False)
    assert again["summary"]["steps"] == 5  # resumed from step 3
    assert sorted(p.stat().st_mtime for p in (tmp_path / "world").glob("*.tar")) == first_shards  # data reused
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 5


def test_alternating_pairs_with_a_fourth_kind_of_input(tmp_path):
    overrides = [f"data.root={tmp_path / 'world'}", *TINY, "data.modalities=[image, text, depth]", "alternate=true",
                 "train.log_every=1"]
    recipe = load_config(UnifiedRecipe, None, overrides)
    recipe.model.tokenizers.pop("audio")
    recipe.model.tokenizers["depth"] = {"patch": 16}  # depth maps: the registry's patch tokenizer, one channel
    report = run_unified(recipe, tmp_path / "run", progress=False)
    assert len(report["retrieval"]) == 6
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [next(k for k in r if k.startswith("loss/") and k.count("-") == 1) for r in lines] == \
        ["loss/image-text", "loss/image-depth", "loss/text-depth"]  # one pair per step, round robin


def test_content_keys_and_prompts():
    sample = {"json": {"objects": [{"size": "large", "color": "red", "shape": "circle", "x": 0.5, "y": 0.1}]}}
    assert content_key(sample) == "large red circle at the top"
    prompts = world_prompts("color")
    assert set(prompts) == {"red", "green", "blue", "yellow", "purple", "cyan", "orange", "pink"}
    assert "A single small red star in the centre." in prompts["red"]
    assert all("red" not in p for p in prompts["blue"])


def test_cli_runs_symile_xor(tmp_path, capsys):
    code = main(["-q", "train", "symile-xor", str(tmp_path), "p_hats=[1.0]", "losses=[symile]", "n_train=512",
                 "n_test=256", "train.steps=5", "train.batch_size=128"])
    assert code == 0
    assert json.loads((tmp_path / "symile_xor.json").read_text())["table"][0]["p_hat"] == 1.0
    assert "bayes" in capsys.readouterr().out


def test_cli_names_a_modality_without_tokenizer(tmp_path, capsys):
    code = main(["-q", "train", "unified", str(tmp_path), f"data.root={tmp_path / 'w'}",
                 "data.modalities=[image, text, audio, qa]"])
    assert code == 1
    assert "the data has modality 'qa' but the model has no tokenizer for it" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # refused before generating anything


@pytest.mark.slow
def test_trimodal_recipe_with_speech_learns_above_chance(tmp_path):
    """Image, caption and espeak speech (a few hundred samples, about a minute): the pairs with text well above
    chance (image-audio, the hardest pair, needs far longer: see docs/unified.md)."""
    overrides = [f"data.root={tmp_path / 'world'}", "data.n_train=300", "data.n_val=40", "data.n_test=100",
                 "data.vocab_size=300", "train.steps=150", "train.batch_size=32", "train.warmup=10",
                 "train.eval_every=150", "threads=1"]
    report = run_unified(load_config(UnifiedRecipe, None, overrides), tmp_path / "run", progress=False)
    assert len(report["retrieval"]) == 6
    for key, metrics in report["retrieval"].items():
        if "text" in key:
            assert metrics["R@10"] > 2 * report["chance"][key]["R@10"], key
    assert report["zero_shot"]["color"]["accuracy"] > 2 * report["zero_shot"]["color"]["chance"]
