"""The decoder over modalities: projectors, splicing several media per prompt, bad input (count mismatch, too
long), loss on answers only, frozen towers, LoRA, save/load."""

from __future__ import annotations

import pytest
import torch
from _vlm import image, model

from sensorium.models.template import IGNORE, pad_rows
from sensorium.models.vlm import MediaConfig, TowerTokens, VisionLanguageModel
from sensorium.nn.lora import apply_lora, merge_lora
from sensorium.nn.projector import ProjectorConfig, build_projector, output_tokens


@pytest.mark.parametrize("kind, n_out", [("mlp", 16), ("pixel_shuffle", 4), ("qformer", 5)])
def test_projectors(kind, n_out):
    cfg = ProjectorConfig(kind=kind, queries=5, heads=2, positions=16)
    proj = build_projector(cfg, 12, 8)
    tokens, mask = torch.randn(3, 16, 12), torch.ones(3, 16, dtype=torch.bool)
    out, out_mask = proj(tokens, mask)
    assert out.shape == (3, n_out, 8) and out_mask.all() and output_tokens(cfg, 16) == n_out
    if kind == "qformer":  # padded tower tokens never change the result
        mask[0, 10:] = False
        noisy = tokens.clone()
        noisy[0, 10:] = 100.0
        assert torch.allclose(proj(tokens, mask)[0][0], proj(noisy, mask)[0][0], atol=1e-5)
    if kind == "pixel_shuffle":
        with pytest.raises(ValueError, match="square token grid"):
            proj(torch.randn(1, 12, 12), torch.ones(1, 12, dtype=torch.bool))


def test_projector_encoder_is_bidirectional_and_ignores_padding():
    torch.manual_seed(0)
    proj = build_projector(ProjectorConfig(kind="mlp", positions=16, encoder_layers=2, encoder_heads=2), 12, 8)
    tokens, mask = torch.randn(2, 16, 12), torch.ones(2, 16, dtype=torch.bool)
    out, out_mask = proj(tokens, mask)
    assert out.shape == (2, 16, 8) and out_mask.all()
    later = tokens.clone()
    later[:, -1] += 1.0  # the first token sees the last one (no causal mask inside the encoder)
    assert not torch.allclose(proj(later, mask)[0][:, 0], out[:, 0], atol=1e-4)
    mask[0, 10:] = False
    noisy = tokens.clone()
    noisy[0, 10:] = 100.0
    assert torch.allclose(proj(tokens, mask)[0][0, :10], proj(noisy, mask)[0][0, :10], atol=1e-5)
    with pytest.raises(ValueError, match="encoder_heads"):
        build_projector(ProjectorConfig(encoder_layers=1, encoder_heads=3), 12, 8)


@pytest.mark.parametrize("kind", ["mlp", "pixel_shuffle", "qformer"])
def test_projector_coords_tag_tokens_with_their_grid_place(kind):
    from sensorium.nn.projector import grid_coords

    xy = grid_coords(torch.zeros(2, 9, 4))[..., 4:]
    assert xy[0, 0].tolist() == [-1.0, -1.0] and xy[0, 5].tolist() == [1.0, 0.0] and xy[1, 8].tolist() == [1.0, 1.0]
    proj = build_projector(ProjectorConfig(kind=kind, coords=True, queries=3, heads=2), 4, 8)
    tokens = torch.zeros(1, 16, 4)  # identical tokens: only their place tells them apart
    out = proj(tokens, torch.ones(1, 16, dtype=torch.bool))[0]
    assert kind == "qformer" or not torch.allclose(out[0, 0], out[0, 1])
    with pytest.raises(ValueError, match="square token grid"):
        proj(torch.zeros(1, 6, 4), torch.ones(1, 6, dtype=torch.bool))


def _batch(m, convs, generation=False, align="right"):
    enc = m.tokenizer.encode_batch(convs, generation=generation)
    ids, padding = pad_rows([e.ids for e in enc], m.tokenizer.pad_id, align)
    labels = pad_rows([e.labels for e in enc], IGNORE, align)[0]
    return enc, ids, padding, labels


def test_splice_interleaves_several_images_per_prompt():
    m = model()
    convs = [[{"role": "user", "content": "<image> and <image>: same?"}, {"role": "assistant", "content": "2"}],
             [{"role": "user", "content": "<image>\nWhat shape?"}, {"role": "assistant", "content": "circle"}]]
    enc, ids, padding, labels = _batch(m, convs)
    images = [image((255, 0, 0)), image((0, 255, 0)), image((0, 0, 255))]
    inputs = m.media_inputs(enc, [{"image": images[:2]}, {"image": images[2:]}])
    embeds, pad_out, lab_out = m.splice(ids, padding, inputs, labels)
    projected, _ = m.project("image", inputs["image"])  # [3 images, 4 tokens, dim]
    assert embeds.shape[1] == int(padding.sum(1).max()) + 6  # a row with 2 images grows by 2 x (4 - 1)
    assert pad_out.sum(1).tolist() == [int(padding[0].sum()) + 6, int(padding[1].sum()) + 3]
    pid = m.tokenizer.placeholder_id("image")
    first = int((ids[0] == pid).nonzero()[0])
    assert torch.allclose(embeds[0, first:first + 4], projected[0])
    second = int((ids[0] == pid).nonzero()[1]) + 3  # shifted by the first image's extra tokens
    assert torch.allclose(embeds[0, second:second + 4], projected[1])
    assert torch.allclose(embeds[1, int((ids[1] == pid).nonzero()[0]):][:4], projected[2])
    kept = lab_out[lab_out != IGNORE]
    assert torch.equal(kept, labels[labels != IGNORE])  # same labels, in order, none on media
    left, pad_left, _ = m.splice(ids, padding, inputs, align="left")
    assert pad_left[:, -1].all() and torch.allclose(left[0][pad_left[0]], embeds[0][pad_out[0]])


def test_bad_input_is_an_error_naming_the_problem():
    m = model(max_positions=32)
    enc, ids, padding, _ = _batch(m, [[{"role": "user", "content": "<image><image> compare"}]], generation=True)
    with pytest.raises(ValueError, match=r"conversation 0: 2 <image> placeholder\(s\) but 1 image"):
        m.media_inputs(enc, [{"image": [image()]}])
    with pytest.raises(ValueError, match=r"2 <image> placeholder\(s\) in the batch but 3 image"):
        m.splice(ids, padding, {"image": m.towers["image"].prepare([image()] * 3)})
    with pytest.raises(ValueError, match="no image given"):
        m.splice(ids, padding, {})
    long = [[{"role": "user", "content": "<image> " + "What shape is the red object? " * 8}]]
    with pytest.raises(ValueError, match="longer than the decoder's context of 32"):
        m.chat(long[0][0]["content"], image=image())
    with pytest.raises(ValueError, match="reads image, not audio"):
        m.chat("<audio> hi", audio=[object()])


def test_loss_is_on_answers_and_frozen_tower_gets_no_gradient():
    m = model().train()
    convs = [[{"role": "user", "content": "<image>\nWhat shape?"}, {"role": "assistant", "content": "circle"}]]
    enc, ids, padding, labels = _batch(m, convs)
    batch = {"ids": ids, "padding": padding, "labels": labels, "media": {"image": m.towers["image"].prepare([image()])}}
    loss, logs = m.loss(batch)
    loss.backward()
    assert logs["tokens"] == 2 and torch.isfinite(loss)
    assert m.projectors["image"].mlp[0].weight.grad is not None
    no_answer = dict(batch, labels=torch.full_like(labels, IGNORE))
    with pytest.raises(ValueError, match="no labelled token"):
        m.loss(no_answer)


def test_cached_tower_tokens_equal_running_the_tower():
    m = model()
    inputs = m.towers["image"].prepare([image(), image((0, 0, 200))])
    tokens, mask = m.towers["image"].tokens(inputs)
    a = m.project("image", inputs)[0]
    b = m.project("image", TowerTokens(tokens, mask))[0]
    assert torch.allclose(a, b)
    half = m.project("image", TowerTokens(tokens.half(), mask))[0]  # the on-disk cache is float16
    assert half.dtype == torch.float32 and torch.allclose(a, half, atol=1e-2)


def test_lora_trains_only_adapters_and_merges_exactly():
    m = model()
    x = torch.randint(3, 50, (2, 6))
    before = m.lm(x)
    params = apply_lora(m.lm, rank=2)
    assert all(p.requires_grad for p in params) and not m.lm.embed.weight.requires_grad
    assert torch.allclose(m.lm(x), before, atol=1e-6)  # B starts at zero
    with torch.no_grad():
        for p in params[1::2]:
            p.normal_(0, 0.1)
    adapted = m.lm(x)
    assert merge_lora(m.lm) == 2 * 4
    assert torch.allclose(m.lm(x), adapted, atol=1e-5)


def test_save_load_roundtrip(tmp_path):
    m = model(projector="qformer")
    m.save(tmp_path / "model")
    again = VisionLanguageModel.load(tmp_path)  # a run directory resolves to its model/
    x = torch.randint(3, 50, (1, 5))
    assert torch.allclose(m.lm(x), again.lm(x))
    assert m.chat("What shape?", image=image()) == again.chat("What shape?", image=image())
    assert not (tmp_path / "model" / "model.safetensors").read_bytes().count(b"towers.image")


def test_audio_modality_through_a_qformer():
    pytest.importorskip("safetensors")
    import numpy as np

    from sensorium.modalities import Waveform

    m = model(image=MediaConfig("image-patches", {"size": 16, "patch": 8}, ProjectorConfig(positions=4)),
              audio=MediaConfig("speech-minilm", {}, ProjectorConfig(kind="qformer", queries=4, heads=4)))
    wave = Waveform((0.1 * np.sin(np.arange(8000) / 5.0)).astype(np.float32))
    short = Waveform(wave.samples[:3000])
    enc = m.tokenizer.encode_batch([[{"role": "user", "content": "<audio><image><audio> what?"}]], generation=True)
    inputs = m.media_inputs(enc, [{"image": [image()], "audio": [wave, short]}])
    ids, padding = pad_rows([e.ids for e in enc], m.tokenizer.pad_id)
    embeds, pad_out, _ = m.splice(ids, padding, inputs)
    assert embeds.shape[1] == len(enc[0].ids) + 2 * 3 + 3  # 2 clips x 4 queries, 1 image x 4 patches


def test_trainer_checkpoint_keeps_tied_weights(tmp_path):
    """Tied embeddings share memory, which safetensors refuses; the checkpoint stores copies and loads back."""
    from sensorium.core.files import load_state, save_state

    m = model()
    assert m.lm.lm_head.weight.data_ptr() == m.lm.embed.weight.data_ptr()
    save_state(tmp_path / "ckpt", {"model": m.state_dict()})
    again = model(seed=5)
    again.load_state_dict(load_state(tmp_path / "ckpt")["model"])
    assert torch.equal(again.lm.embed.weight, m.lm.embed.weight)
    assert again.lm.lm_head.weight.data_ptr() == again.lm.embed.weight.data_ptr()
