"""Targets by name: each module has ``write(functions, example, folder, stem, fp16, quantize) -> ChunkFiles``."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgetrim.runtime import contract


def target_module(name: str) -> ModuleType:
    """``edgetrim.export.targets.<name>``, imported when first used (each pulls in its own toolchain)."""
    if name not in contract.TARGETS:
        raise KeyError(name)
    return importlib.import_module(f"edgetrim.export.targets.{name}")
