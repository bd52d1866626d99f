"""Training by recipe, LLaVA-style, on a tiny pretrained (random HF Llama) decoder: projector alignment on World
captions with the LM frozen, then instruction tuning on World QA through LoRA; resume; evaluation JSON; the
`sensorium vlm` and `sensorium chat` commands, including their bad-input errors."""

from __future__ import annotations

import json

import pytest
import torch
from _vlm import image

from sensorium.cli import main
from sensorium.models.vlm import VisionLanguageModel
from sensorium.core.config import load_config
from sensorium.train.vlm import VLMRecipe, run_recipe

transformers = pytest.importorskip("transformers")

RECIPE = """
model:
  media:
    image:
      tower: image-patches
      tower_args: {size: 16, patch: 8}
      projector: {kind: pixel_shuffle, factor: 2}
  decoder_path: DECODER
data:
  captions: {source: world, task: caption, n_train: 8, n_val: 3, world: {image_size: 16, max_objects: 2}}
  vqa: {source: world, task: vqa, n_train: 8, n_val: 2, turns: 3, world: {image_size: 16, max_objects: 2}}
stages:
  - {name: align, data: captions, train: [projectors], optim: {steps: 3, batch_size: 4, warmup: 1, eval_every: 3}}
  - {name: instruct, data: vqa, train: [projectors, lora], lora_rank: 2,
     optim: {steps: 3, batch_size: 4, warmup: 1, eval_every: 3}}
eval_batch: 8
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("vlm")
    decoder = root / "decoder"
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=290, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    transformers.LlamaForCausalLM(cfg).save_pretrained(decoder)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["a red circle on the left", "what shape is it"] * 10,
                            trainers.BpeTrainer(vocab_size=290, special_tokens=["<unk>", "<s>", "</s>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(decoder / "tokenizer.json"))
    (root / "recipe.yaml").write_text(RECIPE.replace("DECODER", str(decoder)))
    recipe = load_config(VLMRecipe, root / "recipe.yaml", ["seed=1"])
    report = run_recipe(recipe, root / "run", progress=False)
    return root, report


def test_two_stage_recipe_trains_saves_and_evaluates(run):
    root, report = run
    out = root / "run"
    assert (out / "tokenizer.json").is_file() and (out / "model" / "model.safetensors").is_file()
    assert json.loads((out / "stages_done.json").read_text()) == ["align", "instruct"]
    stages = {json.loads(line)["stage"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert stages == {"align", "instruct"}
    assert set(report["vqa"]["by_family"]) == {"relational", "non-relational"} and report["vqa"]["n"] > 0
    assert "cider_d" in report["captions"] and "baseline_most_frequent_caption" in report["captions"]
    model = VisionLanguageModel.load(out)
    assert model.lm.cfg.vocab_size > 290  # the LM's vocabulary grew by our special tokens
    assert not any("lora" in k for k in model.state_dict())  # LoRA merged back into plain weights
    assert report["seed"] == 1  # the recipe's seed and every stage's steps are in the report
    assert report["stages"] == {name: {"steps": 3, "planned_steps": 3, "stopped_early": None}
                                for name in ("align", "instruct")}
    again = run_recipe(load_config(VLMRecipe, out / "recipe.yaml"), out, progress=False, evaluate=False)
    assert again["train_seconds"] == {}  # finished stages are not trained again
    assert again["stages"] == report["stages"]  # ... and their step counts are remembered


def test_max_seconds_is_a_reported_safety_stop(run, tmp_path):
    root, _ = run
    recipe = load_config(VLMRecipe, root / "recipe.yaml", ["stages.0.optim.steps=500", "stages.0.max_seconds=1e-9",
                                                           "stages.1.optim.steps=2"])
    report = run_recipe(recipe, tmp_path / "r", progress=False, evaluate=False)
    first, second = report["stages"]["align"], report["stages"]["instruct"]
    assert first["planned_steps"] == 500 and first["steps"] < 500
    assert "max_seconds" in first["stopped_early"] and f"step {first['steps']}" in first["stopped_early"]
    assert second == {"steps": 2, "planned_steps": 2, "stopped_early": None}


def test_align_stage_leaves_the_decoder_frozen(run, tmp_path):
    from safetensors.torch import load_file

    root, _ = run
    recipe = load_config(VLMRecipe, root / "recipe.yaml", ["stages.1.optim.steps=1"])
    recipe.stages = recipe.stages[:1]
    run_recipe(recipe, tmp_path, progress=False, evaluate=False)
    before = load_file(str(root / "decoder" / "model.safetensors"))["model.layers.0.mlp.up_proj.weight"]
    after = load_file(str(tmp_path / "model" / "model.safetensors"))["lm.transformer.blocks.0.mlp.up.weight"]
    assert torch.equal(before, after)


def test_chat_and_eval_commands(run, tmp_path, capsys):
    root, _ = run
    picture = tmp_path / "p.png"
    image(size=16).save(picture)
    assert main(["chat", str(root / "run"), "--image", str(picture), "--max-new-tokens", "4", "What shape?"]) == 0
    assert main(["chat", str(root / "run"), "--image", str(picture), "--beams", "2", "--max-new-tokens", "3",
                 "What shape?"]) == 0
    assert main(["vlm", "eval", str(root / "run"), "--n", "4", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["vqa"]["n"] == 4
    capsys.readouterr()
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main(["chat", str(root / "run"), "--image", str(tmp_path / "bad.png"), "What?"]) == 1
    assert "cannot decode as image" in capsys.readouterr().err
    assert main(["chat", str(root / "run"), "--image", str(picture), "<image> vs <image>?"]) == 1
    assert "2 <image> placeholder(s) in the question but 1 image file(s) given" in capsys.readouterr().err
    assert main(["chat", str(root / "run"), "--image", str(root / "recipe.yaml"), "What?"]) == 1
    assert ".yaml data is of no known modality, not image" in capsys.readouterr().err
    long = "What shape is it? " * 80
    assert main(["chat", str(root / "run"), "--image", str(picture), long]) == 1
    assert "longer than the decoder's context" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["vlm-world-gpu", "vlm-world-cpu"])
def test_committed_world_recipes_train_and_report_test_split(name, tmp_path):
    """The committed World VQA recipes, shrunk in data and steps only: their model (conv stem, coords, pixel
    shuffle, encoder with sine-cosine positions) trains through both stages and is evaluated on val and test."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sets = ["device=cpu", "bf16=false", "eval_batch=8"]
    for data in ("captions", "vqa"):
        sets += [f"data.{data}.n_train=6", f"data.{data}.n_val=2", f"data.{data}.workers=1",
                 f"data.{data}.cache_dir={tmp_path / 'world'}"]
    for stage in (0, 1):
        sets += [f"stages.{stage}.time_budget_s=0", f"stages.{stage}.optim.steps=2",
                 f"stages.{stage}.optim.batch_size=4", f"stages.{stage}.optim.eval_every=2"]
    recipe = load_config(VLMRecipe, root / "configs" / f"{name}.yaml", sets)
    assert recipe.model.media["image"].projector.encoder_layers > 0 and recipe.model.media["image"].train_tower
    assert recipe.stages[1].replay == {"captions": 0.1}  # the QA stage keeps captioning alive
    report = run_recipe(recipe, tmp_path / "run", progress=False)
    assert report["vqa"]["n"] > 0 and report["vqa-test"]["n"] > 0
    assert "cider_d" in report["captions"] and "baseline_most_frequent_caption" in report["captions-test"]
    assert {"by_family", "parse_failure_rate"} <= set(report["vqa-test"])
    assert len(list((tmp_path / "world").glob("world-*.safetensors"))) == 3  # train, val, test, shared by stages
    again = load_config(VLMRecipe, root / "configs" / f"{name}.yaml", sets)
    from sensorium.train.vlm_data import load_samples

    cached = load_samples(again.data["vqa"], "test", again.seed)  # read back from the cache, same scenes
    fresh = load_samples(type(again.data["vqa"])(**{**again.data["vqa"].__dict__, "cache_dir": ""}), "test", 0)
    assert torch.equal(cached.images, fresh.images) and cached.qa == fresh.qa and cached.keys == fresh.keys


def test_damaged_world_cache_is_regenerated_with_a_warning(tmp_path, caplog):
    from sensorium.train.vlm_data import cached_world_samples

    first = cached_world_samples(tmp_path, 3, "val", 0, {"image_size": 16})
    (path,) = tmp_path.glob("world-val-*.safetensors")
    path.write_bytes(b"not safetensors")
    with caplog.at_level("WARNING"):
        again = cached_world_samples(tmp_path, 3, "val", 0, {"image_size": 16})
    assert "unreadable World cache" in caplog.text and path.name in caplog.text
    assert torch.equal(first.images, again.images) and first.qa == again.qa


def test_the_python_api_loads_the_run_and_chats(run, tmp_path):
    """`sensorium.load` on a decoder run gives a ChatModel: greedy chat equals the streamed pieces joined and the
    model's own generate; the OpenAI-style parts put the image where it stands."""
    import sensorium
    from sensorium.models.generation import GenerationConfig

    root, _ = run
    model = sensorium.load(root / "run")
    assert model.kind == "chat" and model.modalities == ["image"]
    picture = tmp_path / "p.png"
    image(size=16).save(picture)
    messages = [{"role": "user", "content": [{"type": "image", "image": str(picture)},
                                             {"type": "text", "text": "What shape?"}]}]
    answer = model.chat(messages, max_tokens=6)
    assert answer.completion_tokens <= 6 and answer.prompt_tokens > 3
    assert "".join(model.stream(messages, max_tokens=6)) == answer.text
    from PIL import Image

    own = model.model.generate([[{"role": "user", "content": "<image>What shape?"}]],
                               [{"image": [Image.open(picture).convert("RGB")]}], GenerationConfig(max_new_tokens=6))
    assert own[0].text == answer.text
    assert model.ask("What shape?", image=str(picture), max_tokens=6) == answer.text
