"""Shared pytest set-up: `gpu` tests are skipped where no CUDA device is present; a torchvision shim."""

from __future__ import annotations

import _torchvision_shim  # noqa: F401 - declares torchvision's op schemas beside a CPU torch
import pytest
import torch


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
