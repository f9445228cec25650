"""ONNX graphs optimized at load, once per machine.

Artifacts ship the portable graph (standard ONNX ops; contrib ops only where a quantization mode
needs them). ONNX Runtime's graph optimizations depend on the execution providers and the ONNX
Runtime build, so they run where the graph runs: the first load optimizes and saves the result in
the cache, later loads open the saved copy with optimizations off (as fast as a pre-optimized file).

Cache entry: ``<root>/onnx/<key>/model.onnx`` (+ ``model.onnx.data``, ``entry.json``), key =
sha256 of (program sha256, ONNX Runtime version, provider names, optimization level). Entries are
written in a ``.partial`` folder and renamed, so a half-written entry never looks complete. Root:
``$EDGETRIM_CACHE``, else ``$XDG_CACHE_HOME/edgetrim``, else ``~/.cache/edgetrim``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

CACHE_ENV = "EDGETRIM_CACHE"
MODEL = "model.onnx"
ENTRY = "entry.json"
EXTENDED, BASIC = "extended", "basic"
TENSORRT = "TensorrtExecutionProvider"


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgetrim"


def optimization_level(provider_names: list[str]) -> str:
    """Extended fusions (contrib ops) suit the CPU and CUDA providers; TensorRT takes standard ops and
    fuses for itself, so its graphs get the basic (op-set preserving) level."""
    return BASIC if TENSORRT in provider_names else EXTENDED


def cache_key(program_sha256: str, provider_names: list[str], level: str) -> str:
    import onnxruntime as ort

    text = "|".join([program_sha256, ort.__version__, ",".join(provider_names), level])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached_graph(program_sha256: str, provider_names: list[str]) -> Path:
    """Where the optimized copy of a program lives (it may not exist yet)."""
    level = optimization_level(provider_names)
    return cache_root() / "onnx" / cache_key(program_sha256, provider_names, level) / MODEL


def ort_level(level: str):
    import onnxruntime as ort

    levels = ort.GraphOptimizationLevel
    return levels.ORT_ENABLE_BASIC if level == BASIC else levels.ORT_ENABLE_EXTENDED


def optimize_into_cache(options, source: Path, program_sha256: str, provider_names: list[str]) -> Path | None:
    """Set ``options`` so that the session about to be created optimizes ``source`` and saves it in a
    fresh partial entry; returns that partial folder (``publish`` it once the session exists), or None
    when the cache cannot be written (the session then optimizes in memory only)."""
    level = optimization_level(provider_names)
    options.graph_optimization_level = ort_level(level)
    final = cached_graph(program_sha256, provider_names).parent
    partial = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        (partial / ENTRY).write_text(
            json.dumps(
                {"program_sha256": program_sha256, "source": source.name, "providers": provider_names, "level": level},
                indent=1,
            )
        )
    except OSError:
        return None
    options.optimized_model_filepath = str(partial / MODEL)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", MODEL + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    return partial


def publish(partial: Path, program_sha256: str, provider_names: list[str]) -> None:
    """Rename a written partial entry into place; another process that got there first wins."""
    final = cached_graph(program_sha256, provider_names).parent
    try:
        if (partial / MODEL).exists():
            partial.rename(final)
    except OSError:
        pass
    shutil.rmtree(partial, ignore_errors=True)
