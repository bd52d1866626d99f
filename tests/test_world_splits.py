"""Splits: iid streams are disjoint, compositional held-out combinations never reach training, and the Symile
target is a function of image and audio jointly while independent of each alone (measured from pixels and sound)."""

import shutil

import numpy as np
import pytest

from sensorium.data.world import WorldConfig, generate_scene, held_out_combos, make_sample


def test_iid_splits_are_different_streams():
    train = [generate_scene(0, "train", i).as_dict()["objects"] for i in range(20)]
    val = [generate_scene(0, "val", i).as_dict()["objects"] for i in range(20)]
    assert all(t != v for t, v in zip(train, val))


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_held_out_combinations_never_occur_in_compositional_training(seed):
    held = held_out_combos(seed)
    colours, shapes = {c for c, _ in held}, {s for _, s in held}
    assert len(held) == 8 and len(colours) == 8 and len(shapes) == 5  # every colour and shape still trained
    for split in ("comp-train", "comp-val"):
        for i in range(300):
            scene = generate_scene(seed, split, i)
            assert not any((o.color, o.shape) in held for o in scene.objects), (split, i)
            assert not scene.held_out
    for i in range(100):
        scene = generate_scene(seed, "comp-test", i)
        assert any((o.color, o.shape) in held for o in scene.objects) and scene.held_out


def test_compositional_training_still_sees_every_colour_and_shape():
    held = held_out_combos(0)
    seen = {(o.color, o.shape) for i in range(400) for o in generate_scene(0, "comp-train", i).objects}
    assert seen == {(c, s) for c in {c for c, _ in held} for s in {s for _, s in held}} - held


def test_symile_target_needs_both_bits():
    bits = np.array([[s.symile["image_bit"], s.symile["audio_bit"], s.symile["target"]]
                     for s in (generate_scene(0, "symile-train", i) for i in range(600))])
    image_bit, audio_bit, target = bits.T
    assert np.array_equal(target, image_bit ^ audio_bit)  # exactly predictable from both
    for alone in (image_bit, audio_bit):  # each alone says nothing: P(target | bit) stays near 1/2
        for value in (0, 1):
            assert abs(target[alone == value].mean() - 0.5) < 0.08
    assert abs(np.corrcoef(image_bit, audio_bit)[0, 1]) < 0.1


def _f0(samples: np.ndarray, rate: int = 16000) -> float:
    """Median pitch of voiced 40 ms frames by FFT autocorrelation."""
    frame = 640
    frames = np.lib.stride_tricks.sliding_window_view(samples, frame)[::320]
    frames = frames[np.sqrt((frames ** 2).mean(axis=1)) > 0.03]
    frames = frames - frames.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(frames, 2 * frame)
    ac = np.fft.irfft(np.abs(spectrum) ** 2)[:, :frame]
    lo, hi = rate // 400, rate // 50
    return float(np.median(rate / (lo + np.argmax(ac[:, lo:hi], axis=1))))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_symile_bits_are_carried_by_image_and_audio_only():
    for index in range(10):
        sample = make_sample(index, "symile-test", 0, WorldConfig(max_objects=2), ("image", "audio", "text", "tabular"))
        truth = sample["json"]["symile"]
        image = np.asarray(sample["image"], dtype=float)
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        seen_image_bit = int(np.median(border.mean(axis=1)) > 128)  # light vs dark background
        heard_audio_bit = int(_f0(sample["audio"].samples) > 150)  # high vs low voice
        assert (seen_image_bit, heard_audio_bit) == (truth["image_bit"], truth["audio_bit"])
        assert sample["tabular"]["target"] == seen_image_bit ^ heard_audio_bit
        # neither bit leaks into the other modalities
        assert not {"background", "voice", "image_bit", "audio_bit"} & set(sample["tabular"])
        assert not any(word in sample["text"] for word in ("light", "dark", "voice", "background"))
