"""``edgetrim bench DIR --onnx-load``: portable graphs optimized at load vs pre-optimized ones.

For every ONNX program of an artifact, side by side in one run, in interleaved rounds:

- ``cold``: the portable graph, first load on this machine (optimized, then saved to an empty cache);
- ``cached``: the portable graph again (the optimized copy opened from the cache);
- ``preoptimized``: the same graph optimized for the CPU provider ahead of time and opened with
  optimizations off (what edgetrim 0.2 shipped), built in a scratch folder for the comparison.

Load time is session creation; run time is the median of ``repeats`` runs on seeded inputs of the
declared shapes (the cached and pre-optimized sessions' outputs are compared too). CPU provider.
Writes ``load.json`` and ``load.md``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from edgetrim.runtime import contract, onnx_cache
from edgetrim.runtime.backends import CPU, OnnxBackend
from edgetrim.runtime.chunks import example_feeds
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import open_artifact

MODES = ("cold", "cached", "preoptimized")


def preoptimize(source: Path, dst: Path) -> Path:
    """The 0.2 exporter's step: ONNX Runtime's extended CPU optimizations applied and saved."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", dst.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(source), options, providers=[CPU])
    return dst


def timed_open(path: Path, chunk: dict, sha: str | None, preoptimized: bool) -> tuple[OnnxBackend, float]:
    t0 = time.perf_counter()
    backend = OnnxBackend(path, [o["name"] for o in chunk["outputs"]], [CPU], sha, preoptimized)
    return backend, (time.perf_counter() - t0) * 1e3


def run_ms(backend: OnnxBackend, feeds: dict, repeats: int) -> tuple[float, dict]:
    outs = backend.run(feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        backend.run(feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), outs


def bench_load(root: Path, rounds: int, repeats: int, out: Path | None, progress=lambda m: None) -> dict:
    artifact = open_artifact(root)
    if artifact.target != contract.ONNX:
        raise UserError(f"`onnx_load` measures ONNX artifacts; {root} is a {artifact.target} artifact")
    found = artifact.programs()
    saved_cache = os.environ.get(onnx_cache.CACHE_ENV)
    rows: dict[str, dict[str, list[float]]] = {label: {} for label, *_ in found}
    max_diff: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="edgetrim-load-") as scratch:
        baseline = {}
        for i, (label, _, _, path, _) in enumerate(found):  # the 0.2-style pre-optimized copies
            baseline[label] = preoptimize(path, Path(scratch) / f"pre{i}.onnx")
        try:
            for r in range(rounds):
                os.environ[onnx_cache.CACHE_ENV] = str(Path(scratch) / f"cache{r}")  # empty: a first load
                for label, chunk, _, path, sha in found:
                    progress(f"round {r + 1}/{rounds}: {label}")
                    feeds = example_feeds(chunk)
                    timing = rows[label]
                    for mode in MODES:
                        source = baseline[label] if mode == "preoptimized" else path
                        backend, load = timed_open(
                            source, chunk, None if mode == "preoptimized" else sha, mode == "preoptimized"
                        )
                        expected = "miss" if mode == "cold" else "hit" if mode == "cached" else "off"
                        if backend.cache != expected:
                            raise UserError(f"{label}: the ONNX cache gave {backend.cache}, expected {expected}")
                        ms, outs = run_ms(backend, feeds, repeats)
                        timing.setdefault(f"{mode}_load_ms", []).append(load)
                        timing.setdefault(f"{mode}_run_ms", []).append(ms)
                        if mode == "cached":
                            cached_outs = outs
                    diff = max(float(np.max(np.abs(cached_outs[k].astype(np.float64) - outs[k]))) for k in outs)
                    max_diff[label] = max(max_diff.get(label, 0.0), diff)
        finally:
            if saved_cache is None:
                os.environ.pop(onnx_cache.CACHE_ENV, None)
            else:
                os.environ[onnx_cache.CACHE_ENV] = saved_cache
    import onnxruntime as ort

    per_program = {
        label: {**{k: statistics.median(v) for k, v in timing.items()}, "max_abs_diff": max_diff[label]}
        for label, timing in rows.items()
    }
    totals = {k: sum(p[k] for p in per_program.values()) for k in next(iter(per_program.values())) if k.endswith("_ms")}
    report = {
        "artifact": str(root),
        "onnxruntime": ort.__version__,
        "provider": CPU,
        "rounds": rounds,
        "repeats": repeats,
        "programs": per_program,
        "totals": totals,
        "ratios": {
            "cold_load_vs_preoptimized": totals["cold_load_ms"] / totals["preoptimized_load_ms"],
            "cached_load_vs_preoptimized": totals["cached_load_ms"] / totals["preoptimized_load_ms"],
            "cached_run_vs_preoptimized": totals["cached_run_ms"] / totals["preoptimized_run_ms"],
        },
        "random_weights": artifact.random_weights,
    }
    out = out or root / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(report, indent=1))
    (out / "load.md").write_text(markdown(report))
    report["files"] = [str(out / "load.json"), str(out / "load.md")]
    return report


def markdown(report: dict) -> str:
    head = "| program | cold load ms | cached load ms | pre-optimized load ms | cached run ms | pre-optimized run ms |"
    lines = [
        f"# ONNX load: portable (optimized at load, cached) vs pre-optimized — onnxruntime {report['onnxruntime']}, "
        f"CPU, median of {report['rounds']} rounds",
        "",
        head,
        "|---|---|---|---|---|---|",
    ]
    for label, p in {**report["programs"], "total": report["totals"]}.items():
        lines.append(
            f"| {label} | {p['cold_load_ms']:.1f} | {p['cached_load_ms']:.1f} | {p['preoptimized_load_ms']:.1f} | "
            f"{p['cached_run_ms']:.2f} | {p['preoptimized_run_ms']:.2f} |"
        )
    ratios = report["ratios"]
    lines += [
        "",
        f"cold load / pre-optimized: {ratios['cold_load_vs_preoptimized']:.2f}x; cached load / pre-optimized: "
        f"{ratios['cached_load_vs_preoptimized']:.2f}x; cached run / pre-optimized: "
        f"{ratios['cached_run_vs_preoptimized']:.2f}x",
    ]
    return "\n".join(lines) + "\n"
