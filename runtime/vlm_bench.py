"""``edgetrim bench DIR`` for vlm artifacts: the same VLM at several HiRED budgets, side by side in one run.

Each budget's artifact is measured in fresh subprocesses (their own peak RSS, VmHWM), in ``runs``
interleaved rounds (budget A, B, C, then A, B, C again ...), each a warm-up generation and a timed
one on a fixed sample image and prompt with a fixed output length (EOS ignored); medians over rounds.
Reports vision ms, prefill ms, TTFT (image in -> first token), decode tokens/s and peak memory per
budget, with ratios against the unreduced budget (1.0). Writes ``vlm_bench.json``, ``vlm_bench.md``
and ``vlm_bench.png`` (TTFT and peak memory against budget).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edgetrim.runtime.bench import peak_rss_mb
from edgetrim.runtime.errors import UserError

PROMPT = "Describe the image in one sentence."
GOALS = {"ttft_20_le_0.30x": 0.30, "ttft_20_le_0.22x_stretch": 0.22}


def worker(root: str, max_new_tokens: int, runs: int) -> dict:
    from edgetrim.calib.samples import sample_image
    from edgetrim.runtime.vlm import VlmPipeline

    baseline = peak_rss_mb()
    t0 = time.perf_counter()
    pipeline = VlmPipeline(root)
    load_ms = (time.perf_counter() - t0) * 1e3
    image = sample_image(7)
    results = [pipeline.generate(image, PROMPT, max_new_tokens, stop_at_eos=False) for _ in range(runs + 1)][1:]
    pipeline.close()

    def median(key: str) -> float:
        return statistics.median(r.timings_ms[key] for r in results)

    m = pipeline.artifact.manifest
    return {
        "artifact": root,
        "requested_budget": m["reduction"]["requested_budget"],
        "method": m["reduction"]["method"],
        "visual_tokens": m["reduction"]["tokens"],
        "kept_fraction": m["reduction"]["kept_fraction"],
        "prefill_length": m["llm"]["prefill_length"],
        "max_length": m["llm"]["max_length"],
        "prompt_tokens": results[0].prompt_tokens,
        "load_ms": load_ms,
        "preprocess_ms": median("preprocess_ms"),
        "vision_ms": median("vision_ms"),
        "prefill_ms": median("prefill_ms"),
        "ttft_ms": median("ttft_ms"),
        "decode_tokens_per_s": statistics.median(r.generation.decode_tokens_per_s for r in results),
        "new_tokens": len(results[0].tokens),
        "runs": runs,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
    }


def run_worker(root: Path, max_new_tokens: int, runs: int) -> dict:
    cmd = [sys.executable, "-m", "edgetrim.runtime.vlm_bench", "--worker", str(root), str(max_new_tokens), str(runs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"vlm bench worker on {root} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def merge_rounds(results: list[dict]) -> dict:
    """One row per budget from its rounds: median timings, worst peak memory."""
    row = dict(results[0])
    for key in ("load_ms", "preprocess_ms", "vision_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s"):
        row[key] = statistics.median(r[key] for r in results)
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    row["runs"] = len(results)
    return row


def add_ratios(rows: list[dict]) -> dict:
    """Ratios against the unreduced row (method none, or the largest K); returns the goal checks."""
    base = next((r for r in rows if r["method"] == "none"), max(rows, key=lambda r: r["visual_tokens"]))
    for r in rows:
        r["ttft_ratio"] = r["ttft_ms"] / base["ttft_ms"]
        r["prefill_ratio"] = r["prefill_ms"] / base["prefill_ms"]
        r["peak_rss_ratio"] = r["peak_rss_mb"] / base["peak_rss_mb"]
    at20 = next((r for r in rows if r["method"] == "hired" and float(r["requested_budget"]) == 0.2), None)
    if at20 is None or base["method"] != "none":
        return {}
    goals = {name: at20["ttft_ratio"] <= limit for name, limit in GOALS.items()}
    goals["peak_memory_20_lt_100"] = at20["peak_rss_mb"] < base["peak_rss_mb"]
    return goals


def target_label(meta: dict) -> str:
    mode = meta.get("quantize", "none")
    return meta["target"] if mode == "none" else f"{meta['target']}, {mode}"


def markdown(meta: dict, rows: list[dict], goals: dict) -> str:
    weights = (
        "random (seeded preset): generated text is meaningless; timings and memory are those of the real shapes"
        if meta["random_weights"]
        else "checkpoint"
    )
    lines = [
        f"# edgetrim VLM bench: {meta['model']} ({target_label(meta)})",
        "",
        f"Weights: {weights}. Output length {meta['max_new_tokens']} tokens, "
        f"median of {meta['runs']} interleaved rounds (each a fresh process: warm-up + timed generation).",
        "",
        "| budget | K | P | vision ms | prefill ms | TTFT ms | TTFT vs 100% | decode tok/s | peak RSS MB | vs 100% |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        budget = "100% (none)" if r["method"] == "none" else f"{float(r['requested_budget']):.0%}"
        lines.append(
            f"| {budget} | {r['visual_tokens']} | {r['prefill_length']} | {r['vision_ms']:.0f} | "
            f"{r['prefill_ms']:.0f} | {r['ttft_ms']:.0f} | {r['ttft_ratio']:.2f}x | {r['decode_tokens_per_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['peak_rss_ratio']:.2f}x |"
        )
    if goals:
        lines += ["", "Goals: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items())]
    return "\n".join(lines) + "\n"


def plot_png(rows: list[dict], path: Path) -> Path:
    """Two bar panels against budget: TTFT ms and peak RSS MB."""
    from PIL import Image, ImageDraw

    width, height, pad = 900, 420, 60
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    labels = ["100%" if r["method"] == "none" else f"{float(r['requested_budget']):.0%}" for r in rows]
    panels = (("TTFT ms", "ttft_ms", (66, 133, 244)), ("peak RSS MB", "peak_rss_mb", (219, 68, 55)))
    panel_w = (width - pad) // 2
    for p, (title, key, colour) in enumerate(panels):
        x0, top, bottom = pad // 2 + p * panel_w, 50, height - 50
        top_value = max(r[key] for r in rows)
        draw.text((x0 + 10, 15), f"{title} vs budget", fill="black")
        bar = (panel_w - 40) // max(1, len(rows))
        for i, (r, label) in enumerate(zip(rows, labels, strict=True)):
            h = (bottom - top) * r[key] / top_value
            left = x0 + 20 + i * bar
            draw.rectangle([left + 6, bottom - h, left + bar - 6, bottom], fill=colour)
            draw.text((left + 8, bottom - h - 14), f"{r[key]:.0f}", fill="black")
            draw.text((left + 8, bottom + 6), label, fill="black")
        draw.line([x0 + 18, bottom, x0 + panel_w - 10, bottom], fill="black")
    img.save(path)
    return path


def bench_vlm(
    roots: list[Path], out: Path, max_new_tokens: int, runs: int, meta: dict, progress=lambda m: None
) -> dict:
    """Measure each artifact (one per budget) in its own process; write JSON, markdown and PNG into ``out``."""
    if runs < 1 or max_new_tokens < 2:
        raise UserError(f"`runs` {runs} / `max_new_tokens` {max_new_tokens}: pass runs >= 1 and >= 2 new tokens")
    rounds: list[list[dict]] = [[] for _ in roots]
    for r in range(runs):  # interleaved rounds: drifting machine load hits every budget alike
        for i, root in enumerate(roots):
            progress(f"round {r + 1}/{runs}: {root.name}")
            rounds[i].append(run_worker(root, max_new_tokens, 1))
    rows = [merge_rounds(results) for results in rounds]
    rows.sort(key=lambda r: -r["visual_tokens"])
    goals = add_ratios(rows)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "max_new_tokens": max_new_tokens, "runs": runs}
    report = {"meta": meta, "rows": rows, "goals": goals}
    (out / "vlm_bench.json").write_text(json.dumps(report, indent=2))
    (out / "vlm_bench.md").write_text(markdown(meta, rows, goals))
    plot_png(rows, out / "vlm_bench.png")
    report["files"] = [str(out / n) for n in ("vlm_bench.json", "vlm_bench.md", "vlm_bench.png")]
    return report


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
    print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
