"""Shared fixtures: tiny artifacts exported once per session through the real CLI code path."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import pytest

from edgetrim.export.build import export as export_artifact
from edgetrim.export.options import ExportOptions

warnings.filterwarnings("ignore")
logging.getLogger("coremltools").setLevel(logging.ERROR)


@pytest.fixture(scope="session", autouse=True)
def onnx_cache_root(tmp_path_factory) -> Path:
    """ONNX graphs optimized at load are cached in the session's temp folder, not the user's cache."""
    from edgetrim.runtime.onnx_cache import CACHE_ENV

    root = tmp_path_factory.mktemp("onnx-cache")
    os.environ[CACHE_ENV] = str(root)
    return root


@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


def _export(root: Path, name: str, **kwargs) -> Path:
    out = root / name
    if not (out / "manifest.json").exists():
        export_artifact(ExportOptions(out=out, **kwargs))
    return out


@pytest.fixture(scope="session")
def tiny_onnx(artifacts_root) -> Path:
    """tiny-llava-next, HiRED 20%, 2x2 grid, ONNX."""
    return _export(artifacts_root, "tiny-onnx", target="onnx", model="tiny-llava-next")


@pytest.fixture(scope="session")
def tiny_executorch(artifacts_root) -> Path:
    return _export(artifacts_root, "tiny-executorch", target="executorch", model="tiny-llava-next")


@pytest.fixture(scope="session")
def tiny_coreml(artifacts_root) -> Path:
    return _export(artifacts_root, "tiny-coreml", target="coreml", model="tiny-llava-next")


@pytest.fixture(scope="session")
def sample_png(tmp_path_factory) -> Path:
    from edgetrim.calib.samples import sample_image

    path = tmp_path_factory.mktemp("images") / "sample.png"
    sample_image(7).save(path)
    return path
