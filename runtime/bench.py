"""``edgetrim bench DIR``: chunk streaming measured side by side, each mode in its own process.

Modes: ``resident`` (every chunk loaded once and kept), ``streaming`` (memory budget, chunk i+1
loads while chunk i runs), ``naive`` (same budget, load then run, no overlap). Each mode runs in a
fresh subprocess so its peak resident memory (VmHWM, read from the OS) is its own. Writes
``bench.json``, ``bench.md`` and ``timeline.png``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from edgetrim.runtime import contract
from edgetrim.runtime.chunks import MB, ChunkLoader, chunk_bytes
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import open_artifact

MODES = ("resident", "resident-lean", "streaming", "naive")
STREAMING_KINDS = (contract.VISION_ENCODER, contract.TEXT_ENCODER)  # one pipeline fed from its first chunk
KIND_OPTIONS = {  # what ``edgetrim bench`` measures per kind, and the options it takes
    contract.VISION_ENCODER: {"memory_budget_mb", "repeats", "out"},
    contract.TEXT_ENCODER: {"memory_budget_mb", "repeats", "out"},
    contract.VLM: {"budgets", "precisions", "genai", "max_new_tokens", "runs", "out"},
    contract.VIDEO_DENOISER: {"steps", "merge_steps", "leap_at", "step_repeats", "out", "decoder", "text_encoder"}
    | {"memory_budget_mb"},
    contract.LANGUAGE_MODEL: set(),
    contract.VIDEO_DECODER: set(),
}
NOT_BENCHED = {  # kinds edgetrim bench does not measure -> what to do instead
    contract.LANGUAGE_MODEL: "bench a vlm export of the model",
    contract.VIDEO_DECODER: "edgetrim run DIR --latent L writes per-chunk timings and the timeline to run.json",
}
ONNX_LOAD_OPTIONS = {"onnx_load", "runs", "repeats", "out"}  # --onnx-load, any kind of ONNX artifact


@dataclass
class BenchOptions:
    """Every bench option; ``None`` means not given (the kind's default)."""

    out: Path | None = None
    memory_budget_mb: float | None = None  # streaming: the budget (default: the two largest chunks)
    repeats: int | None = None  # streaming: invocations after the first (default 20)
    budgets: str | None = None  # vlm: budgets compared (default 1.0,0.5,0.2,0.1)
    precisions: str | None = None  # vlm: quantize modes compared, e.g. none,int4 (default: the artifact's)
    genai: str | None = None  # vlm: onnxruntime-genai builder precisions measured beside ours, e.g. int4,fp32
    max_new_tokens: int | None = None  # vlm: fixed output length (default 16)
    runs: int | None = None  # vlm: interleaved rounds (default 3)
    steps: int | None = None  # video: sampling steps of the baseline (default 30)
    merge_steps: int | None = None  # video: TDTM steps of the candidate (default steps/2)
    leap_at: int | None = None  # video: leap step of the candidate (default steps/2)
    step_repeats: int | None = None  # video: repeats of the one-step timing (default 3)
    decoder: Path | None = None  # video: bench text -> video across the denoiser and this video decoder
    text_encoder: Path | None = None  # video, with decoder: the text encoder of the first stage
    onnx_load: bool | None = None  # any ONNX artifact: portable load (cold, cached) vs pre-optimized
    verify: str | None = None  # every kind: sha256 "once" (default) or "always" before measuring

    def check(self, kind: str) -> None:
        if self.onnx_load:
            for f in fields(self):
                if getattr(self, f.name) is not None and f.name not in ONNX_LOAD_OPTIONS | {"verify"}:
                    raise UserError(f"`{f.name}` does not apply with `onnx_load`, which takes runs, repeats and out")
            return
        if not KIND_OPTIONS[kind]:
            raise UserError(f"edgetrim bench does not measure {kind} artifacts: {NOT_BENCHED[kind]}")
        if kind == contract.VIDEO_DENOISER:
            given = {f.name for f in fields(self) if getattr(self, f.name) is not None}
            pipeline_only, denoiser_only = {"text_encoder", "memory_budget_mb"} & given, {"step_repeats"} & given
            if self.decoder is None and pipeline_only:
                raise UserError(f"`{min(pipeline_only)}` applies to the text -> video bench: add `decoder` DIR")
            if self.decoder is not None and denoiser_only:
                raise UserError("`step_repeats` applies to the denoiser bench without `decoder`: drop one of them")
        for f in fields(self):
            if getattr(self, f.name) is not None and f.name not in KIND_OPTIONS[kind] | {"verify"}:
                takers = [k for k, names in KIND_OPTIONS.items() if f.name in names]
                takers += ["--onnx-load"] if f.name in ONNX_LOAD_OPTIONS else []
                raise UserError(f"`{f.name}` does not apply to {kind} artifacts; it applies to {' and '.join(takers)}")


NUMPY = {"float32": np.float32, "int64": np.int64, "int32": np.int32, "float16": np.float16}


def peak_rss_mb() -> float:
    """Peak resident set size of this process, from /proc (Linux) or getrusage."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / (1 << 20) if sys.platform == "darwin" else usage / 1024


def reset_peak_rss() -> bool:
    """Restart this process's peak RSS (VmHWM) at its current RSS (Linux: /proc/self/clear_refs); False where
    that is not possible (the peak then keeps running from the process's start)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def default_budget_mb(chunks: list[dict]) -> float:
    """'Two chunks': the two largest chunks plus 5%."""
    sizes = sorted(chunk_bytes(c) for c in chunks)
    return sum(sizes[-2:]) * 1.05 / MB


def load_overlap(events: list[dict]) -> float:
    """Share of load time (after warm-up) spent while a chunk was computing: load hidden behind compute."""
    loads = [e for e in events if e["kind"] == "load" and e["invocation"] >= 1]
    computes = [e for e in events if e["kind"] == "compute"]
    total = sum(e["end_ms"] - e["start_ms"] for e in loads)
    if total <= 0:
        return 1.0
    hidden = 0.0
    for load in loads:
        for c in computes:
            hidden += max(0.0, min(load["end_ms"], c["end_ms"]) - max(load["start_ms"], c["start_ms"]))
    return hidden / total


def worker(mode: str, root: str, budget_mb: float, repeats: int) -> dict:
    artifact = open_artifact(root)
    rng = np.random.default_rng(0)
    feeds = {
        spec["name"]: rng.standard_normal(spec["shape"]).astype(NUMPY[spec["dtype"]])
        for spec in artifact.chunks[0]["inputs"]
    }
    baseline = peak_rss_mb()
    budget = None if mode.startswith("resident") else budget_mb
    t0 = time.perf_counter()
    with ChunkLoader(artifact, budget, overlap=mode == "streaming", lean=mode != "resident") as loader:
        loader.warm()
        loader.run(feeds)
        first_ms = (time.perf_counter() - t0) * 1e3
        latencies = []
        for _ in range(repeats):
            t = time.perf_counter()
            loader.run(feeds)
            latencies.append((time.perf_counter() - t) * 1e3)
        events = [
            {
                "chunk": e.chunk,
                "kind": e.kind,
                "start_ms": (e.start - t0) * 1e3,
                "end_ms": (e.end - t0) * 1e3,
                "invocation": e.invocation,
            }
            for e in loader.timeline.events
        ]
        plan = loader.plan
    per_chunk = {}
    for name in [c["name"] for c in artifact.chunks]:
        loads = [e["end_ms"] - e["start_ms"] for e in events if e["chunk"] == name and e["kind"] == "load"]
        computes = [e["end_ms"] - e["start_ms"] for e in events if e["chunk"] == name and e["kind"] == "compute"]
        per_chunk[name] = {
            "load_ms": statistics.mean(loads) if loads else 0.0,
            "loads": len(loads),
            "compute_ms": statistics.median(computes),
        }
    return {
        "mode": mode,
        "lean_sessions": mode != "resident",
        "load_overlap_fraction": load_overlap(events),
        "budget_mb": budget,
        "plan": {"resident": list(plan.resident), "streamed": list(plan.streamed), "overlap": plan.overlap},
        "first_invocation_ms": first_ms,
        "latency_ms": statistics.mean(latencies) if latencies else first_ms,
        "latency_median_ms": statistics.median(latencies) if latencies else first_ms,
        "repeats": repeats,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "per_chunk": per_chunk,
        "events": events,
    }


def run_mode(mode: str, root: Path, budget_mb: float, repeats: int) -> dict:
    cmd = [sys.executable, "-m", "edgetrim.runtime.bench", "--worker", mode, str(root), str(budget_mb), str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"bench worker ({mode}) failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(results: dict[str, dict], artifact_bytes: int, chunks: list[dict]) -> dict:
    res, lean, stream, naive = (results[m] for m in MODES)
    load_cost = naive["latency_ms"] - lean["latency_ms"]
    hidden = (naive["latency_ms"] - stream["latency_ms"]) / load_cost if load_cost > 0 else 1.0
    return {
        "chunks": len(chunks),
        "artifact_mb": artifact_bytes / MB,
        "streaming_latency_ratio": stream["latency_ms"] / res["latency_ms"],
        "streaming_latency_ratio_vs_lean": stream["latency_ms"] / lean["latency_ms"],
        "naive_latency_ratio": naive["latency_ms"] / res["latency_ms"],
        "streaming_peak_rss_ratio": stream["peak_rss_mb"] / res["peak_rss_mb"],
        "streaming_peak_rss_ratio_vs_lean": stream["peak_rss_mb"] / lean["peak_rss_mb"],
        "load_hidden_fraction": hidden,
        "load_overlap_fraction": stream["load_overlap_fraction"],
        "goals": {
            "peak_rss_le_40pct": stream["peak_rss_mb"] / res["peak_rss_mb"] <= 0.40,
            "latency_le_1.25x": stream["latency_ms"] / res["latency_ms"] <= 1.25,
            "load_hidden_ge_70pct": hidden >= 0.70,  # in wall-clock terms, against the naive run
        },
    }


def markdown(meta: dict, results: dict[str, dict], summary: dict) -> str:
    lines = [
        f"# edgetrim bench: {meta['artifact']}",
        "",
        f"target {meta['target']}, {summary['chunks']} chunks, {summary['artifact_mb']:.1f} MB, memory budget "
        f"{meta['budget_mb']:.1f} MB, {meta['repeats']} repeated invocations; weights: "
        f"{'random (seeded preset)' if meta['random_weights'] else 'checkpoint'}",
        "",
        "| mode | first invocation ms | latency ms (mean of repeats) | vs resident | peak RSS MB | vs resident |",
        "|---|---|---|---|---|---|",
    ]
    base = results["resident"]
    for mode in MODES:
        r = results[mode]
        lines.append(
            f"| {mode} | {r['first_invocation_ms']:.0f} | {r['latency_ms']:.0f} | "
            f"{r['latency_ms'] / base['latency_ms']:.2f}x | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x |"
        )
    lines += [
        "",
        f"Load hidden behind compute: {summary['load_overlap_fraction']:.0%} of streaming load time overlapped a "
        f"running chunk (timeline); latency-based (naive - streaming) / (naive - resident-lean): "
        f"{summary['load_hidden_fraction']:.0%}. 'resident' uses ONNX Runtime's defaults (prepacked weights, "
        "per-session arenas); the other modes use lean sessions (memory-mapped weights, no arena).",
        "",
        "| chunk | MB | load ms (streaming) | compute ms (resident) |",
        "|---|---|---|---|",
    ]
    for c in meta["chunk_sizes"]:
        name = c["name"]
        lines.append(
            f"| {name} | {c['mb']:.1f} | {results['streaming']['per_chunk'][name]['load_ms']:.1f} | "
            f"{base['per_chunk'][name]['compute_ms']:.1f} |"
        )
    goals = summary["goals"]
    lines += ["", "Goals: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items()), ""]
    return "\n".join(lines)


def timeline_png(results: dict[str, dict], names: list[str], path: Path, invocations: int = 3) -> Path:
    """Load lane and compute lane per mode for the first invocations after warm-up."""
    from PIL import Image, ImageDraw

    palette = [
        (66, 133, 244),
        (219, 68, 55),
        (244, 180, 0),
        (15, 157, 88),
        (171, 71, 188),
        (0, 172, 193),
        (255, 112, 67),
        (158, 157, 36),
        (92, 107, 192),
        (240, 98, 146),
    ]
    width, lane, label_w = 1400, 22, 150
    modes = [m for m in ("streaming", "naive", "resident") if m in results]
    height = 40 + len(modes) * (2 * lane + 34) + 30
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    spans = {}
    for m in modes:
        ev = [e for e in results[m]["events"] if 1 <= e["invocation"] <= invocations]
        start = min(e["start_ms"] for e in ev)
        spans[m] = (start, max(e["end_ms"] for e in ev) - start, ev)
    scale = (width - label_w - 20) / max(s[1] for s in spans.values())
    draw.text((10, 10), f"chunk timeline, invocations 1-{invocations} (same time scale; colour = chunk)", fill="black")
    y = 40
    for m in modes:
        start, _, ev = spans[m]
        draw.text((10, y), m, fill="black")
        for row, kind in enumerate(("load", "compute")):
            top = y + 14 + row * lane
            draw.text((70, top + 4), kind, fill=(90, 90, 90))
            for e in (e for e in ev if e["kind"] == kind):
                x0 = label_w + (e["start_ms"] - start) * scale
                x1 = max(x0 + 1, label_w + (e["end_ms"] - start) * scale)
                colour = palette[names.index(e["chunk"]) % len(palette)]
                draw.rectangle([x0, top, x1, top + lane - 4], fill=colour)
        y += 2 * lane + 34
    legend_x = 10
    for i, name in enumerate(names):
        draw.rectangle([legend_x, y, legend_x + 12, y + 12], fill=palette[i % len(palette)])
        draw.text((legend_x + 16, y), name, fill="black")
        legend_x += 20 + 7 * len(name)
    img.save(path)
    return path


def bench(root: Path, budget_mb: float | None, repeats: int, out: Path | None, progress=lambda m: None) -> dict:
    """Resident vs streaming vs naive, each mode in its own process; bench.json, bench.md, timeline.png."""
    artifact = open_artifact(root, STREAMING_KINDS)
    chunks = artifact.chunks
    budget = budget_mb if budget_mb is not None else default_budget_mb(chunks)
    if repeats < 1:
        raise UserError(f"`repeats` {repeats} must be at least 1: e.g. 20")
    ChunkLoader(artifact, budget).close()  # a budget below the largest chunk fails here, before any run
    results = {}
    for mode in MODES:
        progress(mode)
        results[mode] = run_mode(mode, root, budget, repeats)
    artifact_bytes = sum(chunk_bytes(c) for c in chunks)
    summary = summarize(results, artifact_bytes, chunks)
    meta = {
        "artifact": str(root),
        "target": artifact.target,
        "budget_mb": budget,
        "repeats": repeats,
        "random_weights": artifact.manifest["source"]["random_weights"],
        "chunk_sizes": [{"name": c["name"], "mb": chunk_bytes(c) / MB} for c in chunks],
    }
    out = out or root / "bench"
    out.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "summary": summary, "results": results}
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    (out / "bench.md").write_text(markdown(meta, results, summary))
    timeline_png(results, [c["name"] for c in chunks], out / "timeline.png")
    report["files"] = [str(out / n) for n in ("bench.json", "bench.md", "timeline.png")]
    return report


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--worker":
    print(json.dumps(worker(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))))
