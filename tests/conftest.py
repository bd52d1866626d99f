"""Shared pytest set-up: `gpu` tests are skipped where no CUDA device is present; a torchvision shim."""

from __future__ import annotations

import importlib.util

import pytest
import torch


def _torchvision_shim() -> None:
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
_torchvision_shim()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """Print the parity numbers (max abs diff) that the checkpoint tests recorded."""
    try:
        from _reference import PARITY
    except ImportError:
        return
    if PARITY:
        terminalreporter.write_sep("-", "checkpoint parity (max abs diff)")
        for name, diff in sorted(PARITY.items()):
            terminalreporter.write_line(f"{name:50s} {diff:.2e}")


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: tiny models on a shared 2-core machine are up to 100x slower with two
    OpenMP threads fighting another process for the cores (spin-waits), and gain nothing from them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
