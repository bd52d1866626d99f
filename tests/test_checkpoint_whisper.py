"""Whisper encoder: a tiny random-weight WhisperModel saved with transformers; Sensorium's own log-mel
features and encoder compared with WhisperFeatureExtractor + model.encoder on the same raw waveforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from _reference import max_diff, perturb  # noqa: E402
from sensorium.interop import export_pretrained, load_pretrained  # noqa: E402

TOL = 1e-4


def _waves(seed: int = 0) -> list[np.ndarray]:
    """A chirp, a noisy tone (both shorter than the chunk) and noise longer than the chunk, at 16 kHz."""
    rng = np.random.RandomState(seed)
    t = np.arange(12000) / 16000
    return [np.sin(2 * np.pi * (200 + 900 * t) * t).astype(np.float32),
            (0.3 * np.sin(2 * np.pi * 440 * t[:7000]) + 0.05 * rng.randn(7000)).astype(np.float32),
            (0.2 * rng.randn(20000)).astype(np.float32)]


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    root = tmp_path_factory.mktemp("hf-whisper")
    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64, num_mel_bins=16,
                        max_source_positions=50, vocab_size=64, max_target_positions=16,
                        pad_token_id=1, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
    perturb(WhisperModel(cfg)).save_pretrained(root)
    WhisperFeatureExtractor(feature_size=16, chunk_length=1).save_pretrained(root)  # 1 s -> 100 frames
    return root


def _reference(root):
    from transformers import WhisperFeatureExtractor, WhisperModel

    features = WhisperFeatureExtractor.from_pretrained(root)(_waves(), sampling_rate=16000, return_tensors="pt")
    encoder = WhisperModel.from_pretrained(root).eval().get_encoder()
    with torch.no_grad():
        return features["input_features"], encoder(features["input_features"]).last_hidden_state


def _check(name, root, ref_features, ref_hidden):
    pretrained = load_pretrained(root)
    assert pretrained.family == "whisper"
    features = pretrained.audio(_waves())
    assert max_diff(f"{name} log-mel features", features, ref_features) < 1e-4
    with torch.no_grad():
        hidden = pretrained.model(features)
    assert max_diff(f"{name} encoder hidden states", hidden, ref_hidden) < TOL


def test_whisper_encoder_parity_and_round_trip(whisper_dir, tmp_path):
    _check("whisper", whisper_dir, *_reference(whisper_dir))
    out = export_pretrained(load_pretrained(whisper_dir), tmp_path / "export")
    _check("whisper exported", out, *_reference(out))


def test_wrong_input_length_is_a_clear_error(whisper_dir):
    model = load_pretrained(whisper_dir).model
    with pytest.raises(ValueError, match="expects log-mel"):
        model(torch.zeros(1, 16, 30))


def test_whisper_tower_resamples_and_pools(whisper_dir):
    from sensorium.modalities.audio import Waveform
    from sensorium.encoders import build_tower

    tower = build_tower("hf-whisper", path=whisper_dir)
    pretrained = load_pretrained(whisper_dir)
    with torch.no_grad():
        expected = pretrained.model(pretrained.audio(_waves())).mean(dim=1)
    assert torch.allclose(tower.encode([Waveform(w, 16000) for w in _waves()]), expected, atol=1e-6)
    assert tower.encode([Waveform(_waves()[0][::2].copy(), 8000)]).shape == (1, 32)  # resampled to 16 kHz
