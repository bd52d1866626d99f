"""Bad checkpoint directories get errors naming the file and tensors; pickle is refused unless allowed;
sharded safetensors load; the tower registry and the `sensorium checkpoint` commands use loaded towers."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from _reference import TEXTS, make_hf_clip, perturb, random_images  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from sensorium.cli import main  # noqa: E402
from sensorium.encoders import build_tower
from sensorium.core.files import CheckpointError
from sensorium.interop import load_pretrained  # noqa: E402

LLAMA = dict(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
             num_key_value_heads=1, max_position_embeddings=32)


@pytest.fixture()
def llama_dir(tmp_path):
    torch.manual_seed(0)
    perturb(transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))).save_pretrained(tmp_path / "llama")
    return tmp_path / "llama"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_hf_clip(tmp_path_factory.mktemp("hf-clip"))


def _edit_weights(root, edit):
    state = load_file(root / "model.safetensors")
    edit(state)
    save_file(state, root / "model.safetensors", metadata={"format": "pt"})


def test_missing_config_and_unknown_architecture(tmp_path, llama_dir):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_pretrained(tmp_path)
    cfg = json.loads((llama_dir / "config.json").read_text())
    (llama_dir / "config.json").write_text(json.dumps({**cfg, "model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(CheckpointError, match=r"config.json: unknown architecture \(model_type='bert'"):
        load_pretrained(llama_dir)


def test_missing_unexpected_and_misshaped_tensors_are_named(llama_dir):
    _edit_weights(llama_dir, lambda s: (s.pop("model.layers.0.mlp.up_proj.weight"), s.update(extra=torch.ones(1))))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(llama_dir)
    assert "model.safetensors" in str(err.value) and "unexpected tensors [extra]" in str(err.value)
    _edit_weights(llama_dir, lambda s: s.pop("extra"))
    with pytest.raises(CheckpointError, match=r"missing tensors \[model.layers.0.mlp.up_proj.weight\]"):
        load_pretrained(llama_dir)
    _edit_weights(llama_dir, lambda s: s.update({"model.layers.0.mlp.up_proj.weight": torch.zeros(5, 16)}))
    with pytest.raises(CheckpointError, match=r"shape mismatch \[model.layers.0.mlp.up_proj.weight \(5, 16\) "
                                              r"\(model expects \(24, 16\)\)\]"):
        load_pretrained(llama_dir)


def test_pickle_refused_unless_allowed(llama_dir):
    reference = load_pretrained(llama_dir).model
    torch.save(load_file(llama_dir / "model.safetensors"), llama_dir / "pytorch_model.bin")
    (llama_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="pytorch_model.bin: pickle checkpoint refused"):
        load_pretrained(llama_dir)
    model = load_pretrained(llama_dir, allow_pickle=True).model
    ids = torch.tensor([[1, 5, 7, 9]])
    assert torch.equal(model(ids), reference(ids))


def test_sharded_safetensors(tmp_path):
    torch.manual_seed(0)
    hf = perturb(transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)))
    hf.save_pretrained(tmp_path, max_shard_size="8KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        assert (load_pretrained(tmp_path).model(ids) - hf(ids).logits).abs().max() < 1e-5


def test_towers_from_checkpoint_directory(clip_dir):
    pretrained = load_pretrained(clip_dir)
    image_tower = build_tower("hf-clip", path=clip_dir, modality="image")
    text_tower = build_tower(f"hf-clip-text:{clip_dir}")  # the name-only form configs use
    assert image_tower.dim == text_tower.dim == 16
    with torch.no_grad():
        expected_image = pretrained.model.encode_image(pretrained.image(random_images()))
        expected_text = pretrained.model.encode_text(*pretrained.text(TEXTS))
    assert torch.allclose(image_tower.encode(random_images(), batch_size=2), expected_image, atol=1e-6)
    assert torch.allclose(text_tower.encode(TEXTS), expected_text, atol=1e-6)


def test_cli_info_and_export(clip_dir, tmp_path, capsys):
    assert main(["checkpoint", "info", str(clip_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "clip" and info["parameters"] > 0
    assert main(["checkpoint", "export", str(clip_dir), str(tmp_path / "oc"), "--to", "open_clip"]) == 0
    assert (tmp_path / "oc" / "open_clip_config.json").is_file()
    assert load_pretrained(tmp_path / "oc").family == "open_clip"
    assert main(["checkpoint", "export", str(clip_dir), str(tmp_path / "x"), "--to", "whisper"]) == 1
    assert "sensorium: error" in capsys.readouterr().err
