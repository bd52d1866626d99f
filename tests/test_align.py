from pathlib import Path

import pytest
import torch
import yaml

from sensorium.core.config import to_dict
from sensorium.data.batches import FeatureBatches
from sensorium.data.features import FeatureSet
from sensorium.models.aligned import AlignedConfig, AlignedModel, HeadConfig
from sensorium.train.align import AlignConfig, StageConfig, train_stage, val_recall
from sensorium.core.config import load_config
from sensorium.train.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_recipe_equals_the_defaults():
    assert yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text()) == to_dict(AlignConfig())


def test_recipe_overrides_reach_stages():
    config = load_config(AlignConfig, str(ROOT / "configs" / "quickstart.yaml"), ["stages.1.train.steps=7", "towers.audio=logmel-stats"])
    assert config.stages[1].train.steps == 7 and config.towers["audio"] == "logmel-stats"


def _toy_features(n: int = 96, seed: int = 0) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 8, generator=g)
    feats = {"image": latent @ torch.randn(8, 24, generator=g) + 0.1 * torch.randn(n, 24, generator=g),
             "text": latent @ torch.randn(8, 16, generator=g) + 0.1 * torch.randn(n, 16, generator=g)}
    present = {m: torch.ones(n, dtype=torch.bool) for m in feats}
    present["text"][::7] = False  # some captions missing: the present mask must drop those pairs
    return FeatureSet([f"k{i}" for i in range(n)], feats, present, [f"t{i}" for i in range(n)])


def _model() -> AlignedModel:
    torch.manual_seed(0)
    heads = {"image": HeadConfig(24, 32, 0.1), "text": HeadConfig(16, 32, 0.1)}
    return AlignedModel(AlignedConfig(dim=16, heads=heads, towers={"image": "x", "text": "y"}))


def _stage(steps: int) -> StageConfig:
    return StageConfig("s", ["image", "text"], [["image", "text"]], "clip",
                       TrainConfig(steps=steps, batch_size=32, lr=3e-3, warmup=5, eval_every=10**6, ckpt_every=10))


def test_alignment_learns_and_resume_is_exact(tmp_path, monkeypatch):
    feats = _toy_features()
    before = val_recall(_model().eval(), feats, [["image", "text"]])
    straight = _model()
    train_stage(straight, _stage(40), feats, None, tmp_path / "a", seed=0, device="cpu", progress=False)
    after = val_recall(straight.eval(), feats, [["image", "text"]])
    assert after["image->text/R@1"] > before["image->text/R@1"] + 30

    # Interrupt the same run at step 25 (after the step-20 checkpoint), then start again: it resumes from 20.
    original = FeatureBatches.batch

    def crash_at_25(self, step):
        if step == 25:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(FeatureBatches, "batch", crash_at_25)
    with pytest.raises(KeyboardInterrupt):
        train_stage(_model(), _stage(40), feats, None, tmp_path / "b", seed=0, device="cpu", progress=False)
    monkeypatch.setattr(FeatureBatches, "batch", original)
    fresh = _model()
    torch.manual_seed(123)  # the resumed run must not depend on the new process's RNG
    train_stage(fresh, _stage(40), feats, None, tmp_path / "b", seed=0, device="cpu", progress=False)
    for (name, p), q in zip(straight.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(p, q), name


def test_progressive_stage_freezes_earlier_heads_and_copies_init(tmp_path):
    feats = _toy_features()
    feats.features["audio"] = feats.features["text"] + 0.01
    feats.present["audio"] = torch.ones(len(feats), dtype=torch.bool)
    heads = {"image": HeadConfig(24, 32, 0.1), "text": HeadConfig(16, 32, 0.1), "audio": HeadConfig(16, 32, 0.1)}
    model = AlignedModel(AlignedConfig(dim=16, heads=heads, towers={"image": "x", "text": "y", "audio": "z"}))
    image_before = {k: v.clone() for k, v in model.heads["image"].state_dict().items()}
    stage = StageConfig("speech", ["audio"], [["audio", "text"], ["audio", "image"]], "siglip",
                        TrainConfig(steps=0, batch_size=32), init_from={"audio": "text"})
    train_stage(model, stage, feats, None, tmp_path, seed=0, device="cpu", progress=False)
    for k, v in model.heads["text"].state_dict().items():
        assert torch.equal(v, model.heads["audio"].state_dict()[k])  # copied
    stage.train.steps = 10
    stage.init_from = {}
    train_stage(model, stage, feats, None, tmp_path / "2", seed=0, device="cpu", progress=False)
    for k, v in model.heads["image"].state_dict().items():
        assert torch.equal(v, image_before[k])  # frozen anchor untouched


def test_run_alignment_does_not_depend_on_what_ran_before(tmp_path, monkeypatch):
    """The heads are initialised from the recipe's seed alone: a run whose features were just computed (towers built,
    global RNG consumed) and one that read them from the cache train the same weights."""
    import sensorium.train.align as align

    feats = _toy_features()
    monkeypatch.setattr(align, "feature_cache", lambda config: tmp_path / "cache")
    monkeypatch.setattr(align, "load_features", lambda config, split, cache, progress: feats)

    class _Tower:
        def describe(self):
            return {"name": "toy"}

    monkeypatch.setattr(align, "build_tower", lambda name: _Tower())
    config = AlignConfig(towers={"image": "x", "text": "y"}, heads=align.HeadsConfig(16, 32, 0.1),
                         stages=[_stage(6)])
    models = []
    for run, noise in (("a", 1), ("b", 2)):
        torch.manual_seed(noise)
        torch.randn(noise * 100)  # e.g. towers built with random init while features were computed
        models.append(align.run_alignment(config, tmp_path / run, progress=False))
    for (name, p), q in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(p, q), name
