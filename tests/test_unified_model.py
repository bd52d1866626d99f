"""Per-modality tokenizers (shapes, padding masks, missing values), the unified model in every arrangement (shared,
separate, modality experts, MoE), padding invariance, the [MISSING] token, save/load, and bad-input errors."""

from __future__ import annotations

import pytest
import torch

from sensorium.models.unified import UnifiedConfig, UnifiedModel
from sensorium.nn import TransformerConfig
from sensorium.nn.tokenizers import build_tokenizer, train_bpe

pytestmark = pytest.mark.usefixtures("one_thread")

CORPUS = ["A single large red circle in the centre.", "There is only a small blue square, on the left.",
          "Just one object: a large green star at the top."] * 5


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    path.write_text(train_bpe(CORPUS, vocab_size=300, min_frequency=1))
    return str(path)


def test_text_tokenizer_pads_and_marks_missing(vocab):
    tok = build_tokenizer("text", 16, {"vocab": vocab, "max_length": 12})
    ids = tok.encode(["a red circle", "a single large red circle in the centre of it all", None])
    assert ids.shape[1] == 12 and (ids[0] != 0).sum() < (ids[1] != 0).sum()
    assert ids[2, 0] == tok.tokenizer.token_to_id("[MISSING]") and (ids[2, 1:] == 0).all()
    out = tok(["a red circle", "a blue square on the left"])
    assert out.x.shape[:2] == out.mask.shape and out.mask[0].sum() < out.mask[1].sum()


def test_patch_tubelet_mel_series_and_feature_tokenizers():
    image = build_tokenizer("image", 8, {"patch": 8})(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
    assert image.x.shape == (2, 16, 8) and image.mask.all()
    depth = build_tokenizer("depth", 8, {"patch": 8})(torch.rand(2, 1, 16, 16))
    assert depth.x.shape == (2, 4, 8)
    video = build_tokenizer("video", 8, {"patch": 8, "frames": 2})(
        torch.randint(0, 255, (2, 5, 3, 16, 16), dtype=torch.uint8), torch.tensor([5, 2]))
    assert video.x.shape == (2, 3 * 4, 8) and video.mask[0].all() and video.mask[1].sum() == 4
    audio = build_tokenizer("audio", 8, {"patch_frames": 10, "n_mels": 40, "patch_mels": 20})(
        torch.randn(2, 16000) * 0.1, torch.tensor([16000, 4000]))
    assert audio.x.shape == (2, 11 * 2, 8) and audio.mask[0].all() and audio.mask[1].sum() == 2 * 3
    series = build_tokenizer("timeseries", 8, {"patch": 4, "channels": 6})(torch.randn(2, 10, 6), torch.tensor([10, 4]))
    assert series.x.shape == (2, 3, 8) and series.mask.sum(1).tolist() == [3, 1]
    table = build_tokenizer("tabular", 8, {"columns": ["n", "shape", "x"]})
    rows = table([{"n": 2, "shape": "circle", "x": 0.5}, {"n": 1, "shape": None}, None])
    assert rows.x.shape == (3, 3, 8)
    assert torch.allclose(rows.x[1, 2], table.missing[2] + table.column[2])  # absent value -> missing token
    assert torch.allclose(rows.x[2, 0], table.missing[0] + table.column[0])  # absent row too


def test_a_modality_without_tokenizer_is_named():
    with pytest.raises(ValueError, match="modality 'qa' has no tokenizer"):
        build_tokenizer("qa", 8)
    with pytest.raises(KeyError, match="unknown modality 'smell'"):
        build_tokenizer("smell", 8)


def _config(vocab: str, arrangement: str = "shared", ffn: str = "dense") -> UnifiedConfig:
    return UnifiedConfig(tokenizers={"image": {"patch": 8}, "text": {"vocab": vocab, "max_length": 16},
                                     "audio": {"patch_frames": 8, "n_mels": 40}},
                         trunk=TransformerConfig(dim=16, depth=2, n_heads=2, mlp_hidden=32, fused_qkv=True),
                         embed_dim=8, arrangement=arrangement, ffn=ffn)


def _batch(n: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
            "text": ["a red circle", "a large blue square on the left", "a star"][:n],
            "audio": torch.randn(n, 8000, generator=g) * 0.1, "lengths": {"audio": torch.tensor([8000, 3000, 5000][:n])},
            "present": {m: torch.ones(n, dtype=torch.bool) for m in ("image", "text", "audio")}}


@pytest.mark.parametrize("arrangement,ffn", [("shared", "dense"), ("separate", "dense"), ("shared", "experts"),
                                             ("shared", "moe")])
def test_unified_model_arrangements(vocab, arrangement, ffn):
    torch.manual_seed(0)
    model = UnifiedModel(_config(vocab, arrangement, ffn)).eval()
    emb = model(_batch())
    assert set(emb) == {"image", "text", "audio"}
    for e in emb.values():
        assert e.shape == (3, 8) and torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert (float(model.aux_loss.detach()) > 0) == (ffn == "moe")
    n_trunks = len(model.trunks)
    assert n_trunks == (3 if arrangement == "separate" else 1)


def test_embeddings_do_not_depend_on_batch_padding(vocab):
    torch.manual_seed(0)
    model = UnifiedModel(_config(vocab)).eval()
    batch = _batch()
    with torch.no_grad():
        together = model(batch)
        alone = model({"text": batch["text"][2:], "audio": batch["audio"][2:, :5000],
                       "lengths": {"audio": torch.tensor([5000])}, "present": {"text": torch.ones(1, dtype=torch.bool),
                                                                               "audio": torch.ones(1, dtype=torch.bool)}})
    assert torch.allclose(together["text"][2], alone["text"][0], atol=1e-5)
    assert torch.allclose(together["audio"][2], alone["audio"][0], atol=1e-5)


def test_absent_samples_use_the_learned_missing_token(vocab):
    torch.manual_seed(0)
    model = UnifiedModel(_config(vocab)).eval()
    batch = _batch()
    batch["present"]["image"] = torch.tensor([True, False, False])
    with torch.no_grad():
        emb = model(batch)["image"]
    assert torch.allclose(emb[1], emb[2], atol=1e-6) and not torch.allclose(emb[0], emb[1])


def test_save_and_load_without_the_vocab_file(vocab, tmp_path):
    torch.manual_seed(0)
    model = UnifiedModel(_config(vocab, ffn="experts")).eval()
    model.save(tmp_path / "model")
    copy = UnifiedModel.load(tmp_path / "model").eval()
    with torch.no_grad():
        a, b = model(_batch()), copy(_batch())
    assert all(torch.equal(a[m], b[m]) for m in a)


def test_bad_batches_are_named(vocab):
    model = UnifiedModel(_config(vocab))
    batch = _batch()
    batch["text"] = batch["text"][:2]
    with pytest.raises(ValueError, match=r"batch sizes differ across modalities \(image=3, present\[image\]=3, text=2"):
        model(batch)
    batch = _batch()
    batch["depth"] = torch.rand(3, 1, 16, 16)
    batch["present"]["depth"] = torch.ones(3, dtype=torch.bool)
    with pytest.raises(ValueError, match="no tokenizer for modality 'depth' \\(it has: image, text, audio\\)"):
        model(batch)
    with pytest.raises(ValueError, match="ffn=experts"):
        UnifiedModel(_config(vocab, "separate", "experts"))


def test_prepared_log_mels_give_the_same_tokens_as_waveforms():
    from sensorium.data.loader import _stack

    tok = build_tokenizer("audio", 8, {"patch_frames": 8, "n_mels": 40})
    waves, lengths = torch.randn(2, 6000) * 0.1, torch.tensor([6000, 3500])
    direct = tok(waves, lengths)
    mels = [tok.prepare(waves[i:i + 1, : int(n)], lengths[i:i + 1]) for i, n in enumerate(lengths)]
    feats, frames = _stack([m[0, : int(f)] for m, f in mels])
    prepared = tok(feats, frames)
    assert torch.equal(direct.mask, prepared.mask)
    assert torch.allclose(direct.x[direct.mask], prepared.x[prepared.mask], atol=1e-5)
