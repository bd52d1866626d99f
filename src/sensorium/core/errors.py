"""Errors every layer may raise for users: a missing optional package or system tool, named with its install
command."""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any


class MissingDependency(ImportError):
    """A model package or system tool is not installed; the message says how to install it."""


def require(module: str, install: str) -> Any:
    """Import `module` or raise MissingDependency with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(f"{module} is not installed ({exc}); install it with: {install}") from None


def package_version(distribution: str) -> str:
    """Installed version of a pip distribution, recorded so a run says exactly which weights it used."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
