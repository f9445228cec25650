"""``edgetrim bench DIR`` on a video-denoiser artifact: TDTM and LPL measured side by side in one run.

(a) one denoising step (one guided velocity: the CFG batch through embed, every depth step, final),
    ``tdtm`` vs ``plain`` functions, median of repeats, next to the FLOP ratio recorded at export;
(b) full sampling, N plain steps vs TDTM for M steps + leap at L (defaults 30, 15, 15), wall time;
(c) peak resident memory (VmHWM) of a short sampling run (TDTM + plain + leap) with a 2-block memory
    budget vs every chunk resident.
(a) and (b) run in one subprocess with every chunk resident; (c) runs one subprocess per mode so each
peak is its own. Writes ``video_bench.json`` and ``video_bench.md``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edgetrim.runtime import contract
from edgetrim.runtime.bench import peak_rss_mb
from edgetrim.runtime.chunks import MB, chunk_bytes
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import open_artifact
from edgetrim.runtime.sampler import check_plan

GOALS = {"step_ratio": 0.80, "sampling_ratio": 0.45}
MEMORY_STEPS = (2, 1, 1)  # steps, merge steps, leap at: a tdtm step, then a plain one that leaps


def two_block_budget_mb(chunks: list[dict]) -> float:
    """Room for two depth chunks (the largest chunks) plus 5%."""
    sizes = sorted(chunk_bytes(c) for c in chunks if c.get("functions"))
    return sum(sizes[-2:]) * 1.05 / MB


def timing_worker(root: str, steps: int, merge_steps: int, leap_at: int, repeats: int) -> dict:
    """(a) and (b), all chunks resident, sessions opened before timing."""
    from edgetrim.runtime.video import VideoDenoiser, random_caption

    with VideoDenoiser(root) as denoiser:
        caption = random_caption(*denoiser.caption_shape(), 0)
        y_cond, y_null = denoiser.encode_caption(caption)
        velocity = denoiser.guided_velocity(y_cond, y_null, caption.mask, 7.0)
        import numpy as np

        z = np.random.default_rng(0).standard_normal(denoiser.latent_shape).astype(np.float32)
        times: dict[str, list[float]] = {contract.PLAIN: [], contract.TDTM: []}
        for function in times:
            velocity(z, 500.0, function)  # warm-up: sessions load here
        for _ in range(repeats):  # interleaved, so a change in machine load hits both alike
            for function, spent in times.items():
                t0 = time.perf_counter()
                velocity(z, 500.0, function)
                spent.append((time.perf_counter() - t0) * 1e3)
        step_ms = {function: statistics.median(spent) for function, spent in times.items()}
        runs = {}
        for name, (merge, leap) in {contract.PLAIN: (0, None), "tdtm_lpl": (merge_steps, leap_at)}.items():
            t0 = time.perf_counter()
            result = denoiser.generate(caption, steps, merge, leap, None, 7.0, 0)
            runs[name] = {
                "wall_s": time.perf_counter() - t0,
                "evaluations": result.steps_run,
                "tdtm_evaluations": result.functions.count(contract.TDTM),
                "leap_step": result.leap_step,
            }
    return {"step_ms": step_ms, "sampling": runs, "peak_rss_mb": peak_rss_mb()}


def memory_worker(root: str, budget_mb: float | None) -> dict:
    """(c): a short sampling run (see MEMORY_STEPS) under ``budget_mb`` (None: all resident)."""
    from edgetrim.runtime.video import VideoDenoiser, random_caption

    baseline = peak_rss_mb()
    t0 = time.perf_counter()
    with VideoDenoiser(root, budget_mb) as denoiser:
        steps, merge, leap = MEMORY_STEPS
        result = denoiser.generate(random_caption(*denoiser.caption_shape(), 0), steps, merge, leap, None, 7.0, 0)
        plan = denoiser.loader.plan
    return {
        "budget_mb": budget_mb,
        "plan": plan.describe(),
        "evaluations": result.steps_run,
        "wall_s": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
    }


def run_worker(*args, module: str = __name__) -> dict:
    """``args`` (the worker's name first) run by ``module``'s worker entry in a fresh process -> its JSON."""
    cmd = [sys.executable, "-m", module, "--worker", json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"bench worker ({args[0]}) failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"# edgetrim bench (video): {meta['artifact']}",
        "",
        f"target {meta['target']}, latent {meta['latent_shape']} ({meta['tokens_per_frame']} tokens per frame), "
        f"depth {meta['depth']}; weights: {'random (seeded preset)' if meta['random_weights'] else 'checkpoint'}; "
        f"{meta['cpu_count']} CPU cores",
        *([meta["legend"]] if "legend" in meta else []),
        "",
        "| measurement | baseline | candidate | ratio | reference | goal |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['measurement']} | {r['baseline']} | {r['candidate']} | {r['ratio']:.3f}x | {r['reference']} | "
            f"{r['goal']} |"
        )
    return "\n".join(lines) + "\n"


def bench_video(
    root: Path,
    steps: int = 30,
    merge_steps: int | None = None,
    leap_at: int | None = None,
    repeats: int = 3,
    out: Path | None = None,
    step=lambda name: None,
) -> dict:
    """Run (a), (b), (c); returns the report (``rows``: the table's rows) and the ``files`` written."""
    artifact = open_artifact(root, (contract.VIDEO_DENOISER,))
    if artifact.target == contract.COREML:
        raise UserError("CoreML artifacts run through Core ML on Apple devices: bench an ONNX or ExecuTorch export")
    merge_steps = steps // 2 if merge_steps is None else merge_steps
    leap_at = steps // 2 if leap_at is None else leap_at
    check_plan(steps, merge_steps, leap_at)
    if repeats < 1:
        raise UserError(f"`step_repeats` {repeats} must be at least 1: e.g. 3")
    video = artifact.manifest["video"]
    step(f"(a)+(b) one step x{repeats} per function, sampling {steps} plain vs {merge_steps} tdtm + leap {leap_at}")
    timing = run_worker("timing", str(root), steps, merge_steps, leap_at, repeats)
    budget = two_block_budget_mb(artifact.pipeline(contract.DENOISER))
    memory = {}
    for mode, mb in (("resident", None), ("2-block budget", budget)):
        step(f"(c) peak memory, {mode}")
        memory[mode] = run_worker("memory", str(root), mb)
    flops = video["flops"]
    sampling = timing["sampling"]
    rows = [
        {
            "measurement": "one denoising step (CFG batch), tdtm vs plain",
            "baseline": f"{timing['step_ms']['plain']:.0f} ms",
            "candidate": f"{timing['step_ms']['tdtm']:.0f} ms",
            "ratio": timing["step_ms"]["tdtm"] / timing["step_ms"]["plain"],
            "reference": f"FLOP ratio {flops['tdtm'] / flops['plain']:.3f} (depth steps)",
            "goal": f"<= {GOALS['step_ratio']}",
        },
        {
            "measurement": f"sampling: {steps} plain vs {merge_steps} tdtm + leap at {leap_at}",
            "baseline": f"{sampling['plain']['wall_s']:.1f} s ({sampling['plain']['evaluations']} evals)",
            "candidate": f"{sampling['tdtm_lpl']['wall_s']:.1f} s ({sampling['tdtm_lpl']['evaluations']} evals)",
            "ratio": sampling["tdtm_lpl"]["wall_s"] / sampling["plain"]["wall_s"],
            "reference": f"evaluations {sampling['tdtm_lpl']['evaluations'] / sampling['plain']['evaluations']:.3f}",
            "goal": f"<= {GOALS['sampling_ratio']}" if (steps, merge_steps, leap_at) == (30, 15, 15) else "-",
        },
        {
            "measurement": f"peak RSS, sampling {MEMORY_STEPS[0]} steps (tdtm, plain, leap)",
            "baseline": f"{memory['resident']['peak_rss_mb']:.0f} MB resident",
            "candidate": f"{memory['2-block budget']['peak_rss_mb']:.0f} MB ({budget:.0f} MB budget: "
            f"{memory['2-block budget']['plan']})",
            "ratio": memory["2-block budget"]["peak_rss_mb"] / memory["resident"]["peak_rss_mb"],
            "reference": f"artifact {sum(chunk_bytes(c) for c in artifact.chunks) / MB:.0f} MB",
            "goal": "-",
        },
    ]
    goals = {
        "step_ratio_le_0.80": rows[0]["ratio"] <= GOALS["step_ratio"],
        "sampling_ratio_le_0.45": rows[1]["ratio"] <= GOALS["sampling_ratio"],
    }
    meta = {
        "artifact": str(root),
        "target": artifact.target,
        "latent_shape": video["latent_shape"],
        "tokens_per_frame": video["tokens_per_frame"],
        "depth": video["depth"],
        "random_weights": artifact.manifest["source"]["random_weights"],
        "cpu_count": os.cpu_count(),
        "steps": steps,
        "merge_steps": merge_steps,
        "leap_at": leap_at,
        "step_repeats": repeats,
        "budget_mb": budget,
    }
    out = out or root / "bench"
    out.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "rows": rows, "goals": goals, "timing": timing, "memory": memory}
    (out / "video_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "video_bench.md").write_text(markdown(meta, rows))
    report["files"] = [str(out / "video_bench.json"), str(out / "video_bench.md")]
    return report


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    name, *worker_args = json.loads(sys.argv[2])
    worker = {"timing": timing_worker, "memory": memory_worker}[name]
    print(json.dumps(worker(*worker_args)))
