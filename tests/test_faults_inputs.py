"""Fault injection at the user's door: bad recipe values and overrides, malformed YAML, damaged model files
(safetensors, config.json, tokenizer.json, HF checkpoints), corrupt images and audio, bad search and generation
arguments, and shards that are unreadable or lack members under `sensorium eval`. Every one is one line on stderr
naming the file, field or value (no traceback; `-v` shows it) and a non-zero exit."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from _faults import png, truncate, wav, write_shard
from sensorium.cli import main
from sensorium.core.config import ConfigError, load_config
from sensorium.core.files import CheckpointError
from sensorium.models.aligned import AlignedConfig, AlignedModel, HeadConfig
from sensorium.train.align import AlignConfig

CAPTIONS = ["a red one", "a green one", "a blue one", "a yellow one"]


def _fails(capsys, argv: list[str], *expected: str) -> str:
    """Run the CLI, expect exit 1 and one stderr line holding every `expected` piece; return that line."""
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("sensorium: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])
    return lines[0]


RECIPES = {
    "negative steps": ("stages:\n- name: a\n  train: {steps: -5}\n", "stages.0.train.steps = -5: must be >= 1"),
    "zero batch": ("stages:\n- name: a\n  train: {batch_size: 0}\n", "stages.0.train.batch_size = 0: must be >= 1"),
    "text lr": ("stages:\n- name: a\n  train: {lr: fast}\n", "stages.0.train.lr = 'fast': expected a number"),
    "zero lr": ("stages:\n- name: a\n  train: {lr: 0}\n", "stages.0.train.lr = 0.0: must be > 0"),
    "typo in a stage": ("stages:\n- name: a\n  trian: {steps: 5}\n", "stages.0: unknown key 'trian'; did you mean 'train'?"),
    "unknown loss": ("stages:\n- name: a\n  loss: sigclip\n", "stages.0.loss = 'sigclip': must be one of clip, siglip"),
    "dropout of 1.5": ("heads: {dropout: 1.5}\n", "heads.dropout = 1.5: must be < 1"),
    "list for a number": ("heads: {dim: [1, 2]}\n", "heads.dim = [1, 2]: expected a whole number"),
    "bool as text": ("strict: 'yes'\n", "strict = 'yes': expected true or false"),
    "top-level typo": ("towerz: {image: x}\n", "unknown key 'towerz'; did you mean 'towers'?"),
    "head without tower": ("stages:\n- {name: a, train_heads: [depth], pairs: [[depth, text]]}\n",
                           "stages.0 (a) uses 'depth' but towers has image, text, audio"),
    "not a mapping": ("- a\n- b\n", "a recipe must be a mapping of keys (it holds a list)"),
    "unclosed flow": ("heads: {dim: 8, hidden: [1\n", "not valid YAML"),
    "tab indentation": ("heads:\n\tdim: 8\n", "not valid YAML"),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_bad_recipe_is_one_line_naming_file_key_and_value(tmp_path, capsys, name):
    text, expected = RECIPES[name]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    _fails(capsys, ["train", "align", str(tmp_path / "run"), "--config", str(recipe)], str(recipe), expected)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_binary_and_missing_recipe_files(tmp_path, capsys):
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    _fails(capsys, ["train", "align", str(tmp_path / "run"), "--config", str(tmp_path / "bin.yaml")], "bin.yaml")
    _fails(capsys, ["train", "align", str(tmp_path / "run"), "--config", str(tmp_path / "gone.yaml")],
           "gone.yaml: recipe file not found")


def test_truncated_committed_recipe_names_the_line(tmp_path, capsys):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "configs" / "vlm-clipart-caption.yaml").read_text()
    cut = tmp_path / "cut.yaml"
    cut.write_text(text[: text.index("tie_embeddings")])  # inside a {...} flow mapping
    _fails(capsys, ["train", "vlm", str(tmp_path / "run"), "--config", str(cut)], "cut.yaml: not valid YAML", "line")


def test_numbers_yaml_reads_as_text_are_numbers(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n- name: a\n  train: {lr: 3e-4, steps: 1e3, weight_decay: 1_0e-2}\n")
    config = load_config(AlignConfig, recipe, ["stages.0.train.batch_size=2e2", "heads.dropout=5e-1"])
    train = config.stages[0].train
    assert (train.lr, train.steps, train.batch_size) == (3e-4, 1000, 200) and isinstance(train.lr, float)
    assert math.isclose(train.weight_decay, 0.1) and config.heads.dropout == 0.5
    assert isinstance(train.steps, int) and isinstance(train.batch_size, int)


OVERRIDES = {
    "stages.0.trian.steps=5": "override 'stages.0.trian.steps=5': stages.0: unknown key 'trian'; did you mean 'train'?",
    "stages.7.train.steps=5": "stages has 2 entries; '7' is not an index of it (0..1)",
    "heads.dim=wide": "heads.dim = 'wide': expected a whole number",
    "heads.dim=0": "heads.dim = 0: must be >= 1",
    "heads=5": "heads = 5: expected a mapping of HeadsConfig fields",
    "seed.x=1": "seed = 0 is a value, not a section",
    "stages.0.train.lr=nan": "stages.0.train.lr = nan: expected a number",
    "stages.0.loss=clp": "did you mean 'clip'?",
}


@pytest.mark.parametrize("override", list(OVERRIDES))
def test_bad_override_is_one_line_naming_it(tmp_path, capsys, override):
    _fails(capsys, ["train", "align", str(tmp_path / "run"), override], OVERRIDES[override])


def test_verbose_shows_the_traceback_and_bugs_are_labelled(tmp_path, capsys, monkeypatch):
    with pytest.raises(ConfigError):
        main(["-v", "train", "align", str(tmp_path / "run"), "heads.dim=0"])
    from sensorium.train import align

    def bug(*args, **kwargs):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(align, "run_alignment", bug)
    _fails(capsys, ["train", "align", str(tmp_path / "run")], "internal error TypeError: unsupported operand",
           "rerun with -v")


SEARCH = {
    ("--target", "bogus", "a cat"): "--target 'bogus' is not a modality",
    ("--target", "imgae", "a cat"): "did you mean 'image'?",
    ("-k", "0", "a cat"): "-k 0: the number of hits must be >= 1",
    ("   ",): "the text query is empty",
    (): "give exactly one query",
    ("a cat", "--image", "x.png"): "give exactly one query: a text, --image FILE or --audio FILE (got text, --image)",
}


@pytest.mark.parametrize("args", list(SEARCH))
def test_bad_search_arguments(tmp_path, capsys, args):
    _fails(capsys, ["search", str(tmp_path), *args], SEARCH[args])


CHAT = {
    ("--temperature", "-1"): "temperature=-1.0: must be >= 0",
    ("--temperature", "nan"): "temperature=nan: must be >= 0",
    ("--beams", "0"): "beams=0: must be >= 1",
    ("--top-p", "0"): "top_p=0.0: must be in (0, 1]",
    ("--top-k", "-3"): "top_k=-3: must be >= 0",
    ("--max-new-tokens", "0"): "max_tokens=0: must be >= 1",
    ("--stop", ""): "stop sequences must be non-empty strings",
    ("--device", "gpu7"): "--device='gpu7' is not a device name",
}


@pytest.mark.parametrize("args", list(CHAT))
def test_bad_generation_arguments(tmp_path, capsys, args):
    _fails(capsys, ["chat", str(tmp_path), "What is it?", *args], CHAT[args])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    _fails(capsys, ["chat", str(tmp_path), "What?", "--device", "cuda"], "no CUDA GPU is available here")
    _fails(capsys, ["train", "align", str(tmp_path / "run"), "device=cuda"], "device='cuda' but no CUDA GPU")
    _fails(capsys, ["vlm", "eval", str(tmp_path), "--device", "cuda:1"], "no CUDA GPU")


def test_empty_question_is_refused(tmp_path, capsys):
    _fails(capsys, ["chat", str(tmp_path), "  "], "the question is empty")


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n cut short", png((1, 2, 3))[:40], b"GIF89a garbage"])
def test_corrupt_images_are_named(tmp_path, content):
    from sensorium.inference.items import to_value

    (tmp_path / "q.png").write_bytes(content)
    with pytest.raises(ValueError, match=r"q.png\)?: (cannot decode as image|cannot tell the format|\.png data is)"):
        to_value("image", str(tmp_path / "q.png"), "--image")


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00WAVEfmt ", wav(440.0)[:30]])
def test_corrupt_audio_is_named(tmp_path, content):
    from sensorium.inference.items import to_value

    (tmp_path / "q.wav").write_bytes(content)
    with pytest.raises(ValueError, match=r"q.wav\)?: cannot decode as audio"):
        to_value("audio", str(tmp_path / "q.wav"), "--audio")


def test_search_with_a_corrupt_query_image_names_it_before_loading_anything(tmp_path, capsys):
    (tmp_path / "q.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    _fails(capsys, ["search", str(tmp_path / "no-run"), "--image", str(tmp_path / "q.png")], "q.png): cannot decode")


@pytest.fixture()
def run(tmp_path):
    """An aligned model over the suite's cheap towers, and shards to evaluate it on."""
    heads = {"image": HeadConfig(6, 0), "text": HeadConfig(8, 0)}
    AlignedModel(AlignedConfig(dim=4, heads=heads, towers={"image": "fault-image", "text": "fault-text"})).save(
        tmp_path / "run" / "model")
    write_shard(tmp_path / "data" / "a.tar", CAPTIONS)
    return tmp_path / "run", tmp_path / "data"


def test_eval_goes_on_past_an_empty_shard_unless_strict(run, tmp_path, capsys):
    run_dir, data = run
    (data / "b.tar").write_bytes(b"")
    assert main(["-q", "eval", str(run_dir), "--data", str(data), "--no-baselines", "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 4 and report["skipped"]["by_reason"] == {"unreadable_shard": 1}
    assert report["skipped"]["uncounted_shards"] == [str(data / "b.tar")]
    _fails(capsys, ["eval", str(run_dir), "--data", str(data), "--strict"], "b.tar: empty file (0 bytes)")


def test_eval_strict_fails_on_a_missing_member(run, capsys):
    run_dir, data = run
    write_shard(data / "a.tar", CAPTIONS, skip={1: "txt"})
    assert main(["-q", "eval", str(run_dir), "--data", str(data), "--no-baselines"]) == 0
    _fails(capsys, ["eval", str(run_dir), "--data", str(data), "--strict"], "a.tar:s001: no text member")


@pytest.mark.parametrize("damage", ["truncate weights", "empty weights", "truncate config", "config wrong type"])
def test_damaged_model_files_are_named(run, capsys, damage):
    run_dir, data = run
    model = run_dir / "model"
    if damage == "truncate weights":
        truncate(model / "model.safetensors", 0.7)
        expected = "model.safetensors: truncated or corrupt safetensors file"
    elif damage == "empty weights":
        truncate(model / "model.safetensors", 0)
        expected = "model.safetensors: truncated safetensors file (0 bytes, no header)"
    elif damage == "truncate config":
        truncate(model / "config.json", 0.5)
        expected = "config.json: not valid JSON"
    else:
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "dim": "four"}))
        expected = "config.json: dim = 'four': expected a whole number"
    _fails(capsys, ["eval", str(run_dir), "--data", str(data)], expected)


def test_damaged_tokenizer_and_template_are_named(tmp_path):
    from tokenizers import Tokenizer, models

    from sensorium.models.template import ChatTokenizer

    Tokenizer(models.BPE()).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "template.json").write_text(json.dumps({"stop": ["<|end|>"]}))
    assert ChatTokenizer.load(tmp_path).template.stop == ["<|end|>"]
    (tmp_path / "template.json").write_text(json.dumps({"stopp": ["<|end|>"]}))
    with pytest.raises(ValueError, match=r"template.json: unknown key 'stopp'; did you mean 'stop'\?"):
        ChatTokenizer.load(tmp_path)
    (tmp_path / "template.json").unlink()
    truncate(tmp_path / "tokenizer.json", 0.5)
    with pytest.raises(CheckpointError, match=r"tokenizer.json: not a readable tokenizer.json"):
        ChatTokenizer.load(tmp_path)


def test_damaged_hf_checkpoint_is_named(tmp_path, capsys):
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32, "hidden_size": 16,
              "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "max_position_embeddings": 32}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({"model.embed_tokens.weight": torch.randn(32, 16)}, str(tmp_path / "model.safetensors"))
    truncate(tmp_path / "model.safetensors", 0.5)
    _fails(capsys, ["checkpoint", "info", str(tmp_path)], "model.safetensors: truncated or corrupt safetensors")
    truncate(tmp_path / "config.json", 0.5)
    _fails(capsys, ["checkpoint", "info", str(tmp_path)], "config.json: not valid JSON")
