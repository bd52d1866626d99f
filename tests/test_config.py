"""The one config loader: defaults <- YAML recipe <- dotted overrides, typed and checked. Dataclass sections merge
key by key; lists (stages) are replaced whole with each element built from its class's defaults; mappings merge
unless declared replace-whole (a VLM recipe's data and media, a unified model's tokenizers); every committed recipe
loads, and a saved recipe loads back to the same config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sensorium.core.config import ConfigError, checked, from_dict, load_config, save_config, to_dict
from sensorium.train.align import AlignConfig
from sensorium.train.unified import UnifiedRecipe
from sensorium.train.vlm import VLMRecipe
from sensorium.train.xor import XorConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KIND = {"quickstart": AlignConfig, "align-clip-image": AlignConfig, "vlm-clipart-caption": VLMRecipe,
        "vlm-world-cpu": VLMRecipe, "vlm-world-gpu": VLMRecipe, "world-unified": UnifiedRecipe,
        "symile-xor": XorConfig, "bench-composer-world": AlignConfig, "bench-vlm-world-small": VLMRecipe,
        "bench-unified-world": UnifiedRecipe, "decoder-packaged": VLMRecipe}


def test_every_committed_recipe_is_known_here():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == set(KIND)


@pytest.mark.parametrize("name", sorted(KIND))
def test_committed_recipes_load_and_round_trip(name, tmp_path):
    config = load_config(KIND[name], CONFIGS / f"{name}.yaml")
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(KIND[name], tmp_path / "saved.yaml") == config


def test_stages_are_replaced_whole_and_start_from_stage_defaults(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n- name: only\n  loss: clip\n  train: {steps: 7}\n")
    config = load_config(AlignConfig, recipe)
    assert [s.name for s in config.stages] == ["only"]
    stage = config.stages[0]
    assert (stage.loss, stage.train.steps, stage.train.weight_decay, stage.train.eval_every) == ("clip", 7, 0.2, 100)
    assert stage.train_heads == ["image", "text"]  # the other StageConfig defaults


def test_mappings_merge_unless_declared_replace_whole(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("heads: {dim: 64}\n")
    heads = load_config(AlignConfig, recipe).heads
    assert (heads.dim, heads.hidden) == (64, 1024)  # a dataclass section is merged into the defaults
    recipe.write_text("towers: {image: efficientnet-lite0, text: minilm-l6}\n"
                      "stages: [{name: it, train_heads: [image, text], pairs: [[image, text]]}]\n")
    towers = load_config(AlignConfig, recipe).towers  # replaced whole: no untrained audio head from the defaults
    assert towers == {"image": "efficientnet-lite0", "text": "minilm-l6"}
    recipe.write_text("data: {caps: {source: world, task: caption}}\nstages: [{name: c, data: caps}]\n"
                      "model: {media: {image: {tower: image-convstem}}}\n")
    vlm = load_config(VLMRecipe, recipe)
    assert list(vlm.data) == ["caps"] and vlm.data["caps"].n_val == 300  # replaced; entries from DataConfig defaults
    assert list(vlm.model.media) == ["image"] and vlm.model.media["image"].projector.kind == "mlp"
    assert vlm.model.decoder.dim == 256  # a dataclass section keeps the VLMConfig factory's values it is not given
    recipe.write_text("model: {tokenizers: {image: {patch: 8}}}\n")
    assert load_config(UnifiedRecipe, recipe).model.tokenizers == {"image": {"patch": 8}}  # replaced, not merged


def test_overrides_reach_list_elements_new_mapping_keys_and_whole_values():
    config = load_config(AlignConfig, None, ["stages.1.train.steps=7", "towers.depth=depth-tower",
                                             "stages.0.pairs=[[image, text], [text, image]]", "heads={dim: 64}"])
    assert config.stages[1].train.steps == 7 and config.towers["depth"] == "depth-tower"
    assert config.stages[0].pairs == [["image", "text"], ["text", "image"]]
    assert (config.heads.dim, config.heads.hidden) == (64, 1024)  # a mapping override merges like a recipe
    vlm = load_config(VLMRecipe, None, ["data.vqa.world.image_size=32", "model.media.image.projector.kind=qformer"])
    assert vlm.data["vqa"].world == {"image_size": 32} and vlm.model.media["image"].projector.kind == "qformer"


@dataclass
class _Inner:
    rate: float = checked(0.5, min=0, max=1)
    name: str = checked("a", choices=("a", "b"))


@dataclass
class _Outer:
    items: list[_Inner] = field(default_factory=lambda: [_Inner()])
    by_name: dict[str, _Inner] = field(default_factory=dict)
    count: int | None = None
    scale: float = checked(1.0, gt=0)

    def validate(self) -> None:
        if len(self.items) > 3:
            raise ValueError("at most 3 items")


def test_typed_building_rules_and_hooks():
    built = from_dict(_Outer, {"items": [{"rate": "1e-1"}, {}], "by_name": {"x": {"name": "b"}}, "count": "4"})
    assert built.items == [_Inner(0.1), _Inner()] and built.by_name == {"x": _Inner(0.5, "b")} and built.count == 4
    assert from_dict(_Outer, {"count": None}).count is None
    cases = {
        "items.1.rate = 2.0: must be <= 1": {"items": [{}, {"rate": 2}]},
        "by_name.x.name = 'c': must be one of a, b": {"by_name": {"x": {"name": "c"}}},
        "scale = 0.0: must be > 0": {"scale": 0},
        "where: at most 3 items": {"items": [{}] * 4},
        "items = 'x': expected a list": {"items": "x"},
        "count = 2.5: expected a whole number": {"count": 2.5},
        "unknown key 'scael'; did you mean 'scale'?": {"scael": 1},
    }
    for message, data in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
            from_dict(_Outer, data, "where")


def test_saved_run_recipe_reloads_with_an_override(tmp_path):
    config = load_config(VLMRecipe, CONFIGS / "vlm-world-gpu.yaml")
    (tmp_path / "recipe.yaml").write_text(__import__("yaml").safe_dump(to_dict(config), sort_keys=False))
    again = load_config(VLMRecipe, tmp_path / "recipe.yaml", ["device=cpu"])
    assert again.device == "cpu" and again.stages == config.stages and again.model == config.model
