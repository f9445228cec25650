"""``edgetrim bench DIR`` for vlm artifacts: the same VLM at several HiRED budgets and precisions
(quantize modes), side by side in one run.

Each variant's artifact is measured in fresh subprocesses (their own peak RSS, VmHWM), in ``runs``
interleaved rounds (variant A, B, C, then A, B, C again ...), each a warm-up generation and a timed
one on a fixed sample image and prompt with a fixed output length (EOS ignored); medians over rounds.
Reports artifact bytes, vision ms, prefill ms, TTFT (image in -> first token), decode tokens/s and peak
memory per variant, with ratios against the unreduced float variant (budget 1.0, quantize none; else
the unreduced one, else the largest K). Writes ``vlm_bench.json``, ``vlm_bench.md`` and
``vlm_bench.png`` (size, peak memory, TTFT and decode tokens/s per variant). ``genai`` variants add
onnxruntime-genai's model builder on the same language model (``edgetrim.runtime.genai_bench``) to the same
rounds, fed the image, prompt and visual tokens of one of our artifacts, with ours / genai ratios.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edgetrim.runtime import contract
from edgetrim.runtime.bench import peak_rss_mb
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.genai_bench import EDGETRIM, ENGINE, GenaiVariant, GenaiVlmPipeline, compare
from edgetrim.runtime.genai_bench import markdown as genai_markdown

PROMPT = "Describe the image in one sentence."
GOALS = {"ttft_20_le_0.30x": 0.30, "ttft_20_le_0.22x_stretch": 0.22}


def lm_bytes(manifest: dict) -> int:
    """Bytes of the chunks in the prefill and decode pipelines (the language model without its table)."""
    names = {name for p in (contract.PREFILL, contract.DECODE) for name in manifest["pipelines"].get(p, [])}
    return sum(f["bytes"] for c in manifest["chunks"] if c["name"] in names for f in c["files"])


def worker(root: str, max_new_tokens: int, runs: int, genai_model: str | None = None) -> dict:
    """One variant measured in this process: our artifact ``root``, or (``genai_model``) its vision chunks, prompt
    and table with onnxruntime-genai's model in place of its language model."""
    from edgetrim.calib.samples import sample_image
    from edgetrim.runtime.vlm import VlmPipeline

    baseline = peak_rss_mb()
    t0 = time.perf_counter()
    pipeline = VlmPipeline(root, prompt=PROMPT) if genai_model is None else GenaiVlmPipeline(root, genai_model)
    load_ms = (time.perf_counter() - t0) * 1e3
    image = sample_image(7)
    results = [pipeline.generate(image, PROMPT, max_new_tokens, stop_at_eos=False) for _ in range(runs + 1)][1:]
    pipeline.close()

    def median(key: str) -> float:
        return statistics.median(r.timings_ms[key] for r in results)

    m = pipeline.artifact.manifest
    entries = [f for c in m["chunks"] for f in c["files"]] + m.get("files", [])
    row = {
        "artifact": root,
        "engine": EDGETRIM,
        "quantize": m.get("export_options", {}).get("quantize", "none"),
        "artifact_bytes": sum(f["bytes"] for f in entries),
        "requested_budget": m["reduction"]["requested_budget"],
        "method": m["reduction"]["method"],
        "visual_tokens": m["reduction"]["tokens"],
        "kept_fraction": m["reduction"]["kept_fraction"],
        "prefill_length": m["llm"]["prefill_length"],
        "max_length": m["llm"]["max_length"],
        "prompt_tokens": results[0].prompt_tokens,
        "prefilled_length": results[0].generation.prefill_length,
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
        "lm_bytes": lm_bytes(m),
        "tokens": results[0].tokens,
    }
    if genai_model is None:
        return row
    genai = pipeline.lm.facts()  # the whole pipeline as run: our vision chunks and table, the builder's model
    bytes_run = row["artifact_bytes"] - row["lm_bytes"] + genai["lm_bytes"]
    return row | genai | {"artifact_bytes": bytes_run, "prefill_length": row["prefilled_length"]}  # unpadded


def run_worker(root: Path, max_new_tokens: int, runs: int, genai_model: Path | None = None) -> dict:
    cmd = [sys.executable, "-m", "edgetrim.runtime.vlm_bench", "--worker", str(root), str(max_new_tokens), str(runs)]
    cmd += [str(genai_model)] if genai_model else []
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
    """Ratios against the base row (unreduced and float, else unreduced, else the largest K); returns the
    goal checks (TTFT and memory at 20% against it, at the base's precision)."""
    ours = [r for r in rows if r["engine"] == EDGETRIM]
    unreduced = [r for r in ours if r["method"] == "none"]
    base = min(unreduced, key=lambda r: r["quantize"] != "none") if unreduced else ours[0]
    for r in rows:
        r["ttft_ratio"] = r["ttft_ms"] / base["ttft_ms"]
        r["prefill_ratio"] = r["prefill_ms"] / base["prefill_ms"]
        r["peak_rss_ratio"] = r["peak_rss_mb"] / base["peak_rss_mb"]
        r["bytes_ratio"] = r["artifact_bytes"] / base["artifact_bytes"]
        r["decode_ratio"] = r["decode_tokens_per_s"] / base["decode_tokens_per_s"]
    at20 = next(
        (
            r
            for r in ours
            if r["method"] == "hired" and float(r["requested_budget"]) == 0.2 and r["quantize"] == base["quantize"]
        ),
        None,
    )
    if at20 is None or base["method"] != "none":
        return {}
    goals = {name: at20["ttft_ratio"] <= limit for name, limit in GOALS.items()}
    goals["peak_memory_20_lt_100"] = at20["peak_rss_mb"] < base["peak_rss_mb"]
    return goals


def target_label(meta: dict) -> str:
    mode = meta.get("quantize", "none")
    return meta["target"] if mode == "none" else f"{meta['target']}, {mode}"


def variant_label(r: dict) -> str:
    """``20%``, ``100% (none)``, and the quantize mode when not float: ``20% int4``; ``20% genai-int4`` for
    onnxruntime-genai's model."""
    budget = "100% (none)" if r["method"] == "none" else f"{float(r['requested_budget']):.0%}"
    if r["engine"] == ENGINE:
        return f"{budget} genai-{r['genai_precision']}"
    return budget if r["quantize"] == "none" else f"{budget} {r['quantize']}"


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
        "Ratios are against the first row (unreduced, float when measured).",
        "",
        "| variant | K | prefill ran / P | size MB | vs base | vision ms | prefill ms | TTFT ms | vs base "
        "| decode tok/s | vs base | peak RSS MB | vs base |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {variant_label(r)} | {r['visual_tokens']} | {r['prefilled_length']} / {r['prefill_length']} | "
            f"{r['artifact_bytes'] / 2**20:.0f} | {r['bytes_ratio']:.2f}x | {r['vision_ms']:.0f} | "
            f"{r['prefill_ms']:.0f} | {r['ttft_ms']:.0f} | "
            f"{r['ttft_ratio']:.2f}x | {r['decode_tokens_per_s']:.1f} | {r['decode_ratio']:.2f}x | "
            f"{r['peak_rss_mb']:.0f} | {r['peak_rss_ratio']:.2f}x |"
        )
    lines += genai_markdown(rows, variant_label)
    if goals:
        lines += ["", "Goals: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items())]
    return "\n".join(lines) + "\n"


def plot_png(rows: list[dict], path: Path) -> Path:
    """Four bar panels per variant: artifact size, peak RSS, TTFT and decode tokens/s."""
    from PIL import Image, ImageDraw

    panels = (
        ("size MB", lambda r: r["artifact_bytes"] / 2**20, (15, 157, 88)),
        ("peak RSS MB", lambda r: r["peak_rss_mb"], (219, 68, 55)),
        ("TTFT ms", lambda r: r["ttft_ms"], (66, 133, 244)),
        ("decode tokens/s", lambda r: r["decode_tokens_per_s"], (244, 180, 0)),
    )
    bar, pad, height = 64, 30, 420
    panel_w = 40 + bar * len(rows)
    img = Image.new("RGB", (pad + len(panels) * (panel_w + pad), height), "white")
    draw = ImageDraw.Draw(img)
    labels = [variant_label(r) for r in rows]
    for p, (title, value, colour) in enumerate(panels):
        x0, top, bottom = pad + p * (panel_w + pad), 50, height - 60
        top_value = max(value(r) for r in rows) or 1.0
        draw.text((x0 + 10, 15), title, fill="black")
        for i, (r, label) in enumerate(zip(rows, labels, strict=True)):
            h = (bottom - top) * value(r) / top_value
            left = x0 + 20 + i * bar
            draw.rectangle([left + 6, bottom - h, left + bar - 6, bottom], fill=colour)
            draw.text((left + 6, bottom - h - 14), f"{value(r):.0f}", fill="black")
            for j, word in enumerate(label.split(" ")[:2]):
                draw.text((left + 6, bottom + 6 + 14 * j), word, fill="black")
        draw.line([x0 + 18, bottom, x0 + panel_w, bottom], fill="black")
    img.save(path)
    return path


def bench_vlm(
    roots: list[Path],
    out: Path,
    max_new_tokens: int,
    runs: int,
    meta: dict,
    progress=lambda m: None,
    genai: Sequence[GenaiVariant] = (),
) -> dict:
    """Measure each artifact (one per variant) and each ``genai`` variant in its own process; write JSON, markdown
    and PNG into ``out``."""
    if runs < 1 or max_new_tokens < 2:
        raise UserError(f"`runs` {runs} / `max_new_tokens` {max_new_tokens}: pass runs >= 1 and >= 2 new tokens")
    variants = [(root, None, "") for root in roots] + [(g.artifact, g.model, f" + genai {g.precision}") for g in genai]
    rounds: list[list[dict]] = [[] for _ in variants]
    for r in range(runs):  # interleaved rounds: drifting machine load hits every budget alike
        for i, (root, model, label) in enumerate(variants):
            progress(f"round {r + 1}/{runs}: {root.name}{label}")
            rounds[i].append(run_worker(root, max_new_tokens, 1, model))
    rows = [merge_rounds(results) for results in rounds]
    order = {mode: i for i, mode in enumerate(meta.get("precisions") or ["none"])}
    rows.sort(key=lambda r: (r["engine"] != EDGETRIM, order.get(r["quantize"], len(order)), -r["visual_tokens"]))
    goals = add_ratios(rows) | compare(rows, variant_label)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "max_new_tokens": max_new_tokens, "runs": runs}
    report = {"meta": meta, "rows": rows, "goals": goals}
    (out / "vlm_bench.json").write_text(json.dumps(report, indent=2))
    (out / "vlm_bench.md").write_text(markdown(meta, rows, goals))
    plot_png(rows, out / "vlm_bench.png")
    report["files"] = [str(out / n) for n in ("vlm_bench.json", "vlm_bench.md", "vlm_bench.png")]
    return report


if __name__ == "__main__" and len(sys.argv) in (5, 6) and sys.argv[1] == "--worker":
    print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:])))
