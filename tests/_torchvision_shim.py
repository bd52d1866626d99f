"""Test-only torchvision shim, importable without pytest (conftest uses it; subprocess tests run under it)."""

from __future__ import annotations

import importlib.util

import torch


def torchvision_shim() -> None:
    """Test-only: PyPI's torchvision wheels carry C ops built for a CUDA torch; beside the CPU torch their
    library fails to load and `import torchvision` dies on 'operator torchvision::nms does not exist'
    (and so does `transformers`, which imports it when present). Declaring the two op schemas that
    torchvision registers fake kernels for lets it import; open_clip and HF image processors only use its
    Python transforms. Detection ops (nms) stay unusable, which no test needs."""
    if importlib.util.find_spec("torchvision") is None:
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018 - the real extension is loaded
        return
    except (AttributeError, RuntimeError):
        pass
    global _TORCHVISION_LIB
    _TORCHVISION_LIB = torch.library.Library("torchvision", "DEF")
    _TORCHVISION_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_LIB.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")


_TORCHVISION_LIB = None
torchvision_shim()
