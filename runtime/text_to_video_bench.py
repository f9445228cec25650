"""``edgetrim bench DENOISER --decoder DEC [--text-encoder T5]``: text -> video measured stage by stage.

Three runs, each in a fresh process (so its peaks are its own), on the same caption and noise:
``plain`` (N plain steps, every chunk resident), ``tdtm_lpl`` (TDTM for M steps, leap at L, every chunk resident)
and ``tdtm_lpl_budget`` (the same under a memory budget; default: the two largest chunks of any of the artifacts
plus 5%). Rows: each stage's wall time and the whole pipeline's, plain vs TDTM + LPL; each stage's peak RSS,
resident vs the budget (the decoder's is the activation peak of the pipeline). Writes text_to_video_bench.json,
text_to_video_bench.md and timeline.png (the three runs on one time scale).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgetrim.runtime import contract
from edgetrim.runtime.chunks import MB, chunk_bytes
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import Artifact, open_artifact
from edgetrim.runtime.sampler import check_plan
from edgetrim.runtime.text_to_video import timeline_png
from edgetrim.runtime.video_bench import GOALS, markdown, run_worker

PROMPT_TEXT = "a red fox running through fresh snow at dawn"  # the caption the text encoder encodes
RUNS = {  # run -> (TDTM + LPL, under the budget)
    contract.PLAIN: (False, False),
    "tdtm_lpl": (True, False),
    "tdtm_lpl_budget": (True, True),
}


def default_budget_mb(artifacts: list[Artifact]) -> float:
    """The two largest chunks of any one artifact, plus 5%: every stage can stream."""
    return max(sum(sorted(chunk_bytes(c) for c in a.chunks)[-2:]) for a in artifacts) * 1.05 / MB


def pipeline_worker(roots: dict, steps: int, merge_steps: int, leap_at: int | None, budget_mb: float | None) -> dict:
    """One text -> video run (``roots``: denoiser, decoder, text_encoder or None) -> stages, timeline, steps."""
    from edgetrim.runtime.text import encode_prompt
    from edgetrim.runtime.text_to_video import Sampling, generate
    from edgetrim.runtime.video import random_caption

    denoiser = open_artifact(roots["denoiser"], (contract.VIDEO_DENOISER,))
    decoder = open_artifact(roots["decoder"], (contract.VIDEO_DECODER,))
    video = denoiser.manifest["video"]
    shape = video["caption_length"], video["caption_channels"]
    if roots["text_encoder"] is not None:

        def caption():
            return encode_prompt(Path(roots["text_encoder"]), PROMPT_TEXT, *shape, budget_mb)

    else:
        caption = random_caption(*shape, 0)
    generated = generate(denoiser, caption, Sampling(steps, merge_steps, leap_at, guidance=7.0), decoder, budget_mb)
    sample = generated.sample
    return {
        "stages": generated.stages,
        "timeline": generated.timeline,
        "plans": generated.plans,
        "own_peaks": generated.own_peaks,
        "evaluations": sample.steps_run,
        "tdtm_evaluations": sample.functions.count(contract.TDTM),
        "leap_step": sample.leap_step,
        "frames_shape": list(generated.decoded.frames.shape),
    }


def stage_table(runs: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """run -> stage -> its record."""
    return {name: {s["stage"]: s for s in run["stages"]} for name, run in runs.items()}


def rows(runs: dict[str, dict], plan: tuple[int, int, int]) -> list[dict]:
    """The table: each stage's time and the total (plain vs tdtm_lpl), each stage's peak (vs the budget)."""
    steps, merge_steps, leap_at = plan
    stages = stage_table(runs)
    plain, tdtm, budget = stages[contract.PLAIN], stages["tdtm_lpl"], stages["tdtm_lpl_budget"]
    evals = f"{runs[contract.PLAIN]['evaluations']} vs {runs['tdtm_lpl']['evaluations']} evaluations"
    out = []
    for stage in plain:
        out.append(
            {
                "measurement": f"{stage} time",
                "baseline": f"{plain[stage]['ms'] / 1e3:.2f} s",
                "candidate": f"{tdtm[stage]['ms'] / 1e3:.2f} s",
                "ratio": tdtm[stage]["ms"] / plain[stage]["ms"],
                "reference": evals if stage == contract.VIDEO_DENOISER else "same work",
                "goal": f"<= {GOALS['sampling_ratio']}"
                if stage == contract.VIDEO_DENOISER and plan == (30, 15, 15)
                else "-",
            }
        )
    total = {name: sum(s["ms"] for s in run.values()) for name, run in stages.items()}
    out.append(
        {
            "measurement": "all stages time",
            "baseline": f"{total[contract.PLAIN] / 1e3:.2f} s",
            "candidate": f"{total['tdtm_lpl'] / 1e3:.2f} s",
            "ratio": total["tdtm_lpl"] / total[contract.PLAIN],
            "reference": evals,
            "goal": "-",
        }
    )
    for stage in tdtm:
        out.append(
            {
                "measurement": f"{stage} peak RSS",
                "baseline": f"{tdtm[stage]['peak_rss_mb']:.0f} MB",
                "candidate": f"{budget[stage]['peak_rss_mb']:.0f} MB",
                "ratio": budget[stage]["peak_rss_mb"] / tdtm[stage]["peak_rss_mb"],
                "reference": runs["tdtm_lpl_budget"]["plans"].get(stage, "one pass, streamed"),
                "goal": "-",
            }
        )
    return out


def bench_text_to_video(
    root: Path,
    decoder: Path,
    text_encoder: Path | None,
    steps: int = 30,
    merge_steps: int | None = None,
    leap_at: int | None = None,
    budget_mb: float | None = None,
    out: Path | None = None,
    step=lambda name: None,
) -> dict:
    """The three runs (module doc); returns the report (``rows`` as the video bench's) and the ``files``."""
    from edgetrim.runtime.text import check_width
    from edgetrim.runtime.video import VideoDenoiser
    from edgetrim.runtime.video_decoder import DecoderRunner, check_pair

    denoiser = open_artifact(root, (contract.VIDEO_DENOISER,))
    dec = open_artifact(decoder, (contract.VIDEO_DECODER,))
    encoder = open_artifact(text_encoder, (contract.TEXT_ENCODER,)) if text_encoder is not None else None
    artifacts = [a for a in (encoder, denoiser, dec) if a is not None]
    if any(a.target == contract.COREML for a in artifacts):
        raise UserError("CoreML artifacts run through Core ML on Apple devices: bench ONNX or ExecuTorch exports")
    check_pair(denoiser, dec)
    if encoder is not None:
        check_width(encoder, denoiser.manifest["video"]["caption_channels"])
    merge_steps = steps // 2 if merge_steps is None else merge_steps
    leap_at = steps // 2 if leap_at is None else leap_at
    check_plan(steps, merge_steps, leap_at)
    budget = default_budget_mb(artifacts) if budget_mb is None else budget_mb
    VideoDenoiser(denoiser, budget).close()  # a budget below a stage's largest chunk is refused here, before any run
    DecoderRunner(dec, budget).close()
    roots = {"denoiser": str(root), "decoder": str(decoder), "text_encoder": text_encoder and str(text_encoder)}
    runs = {}
    for name, (reduced, budgeted) in RUNS.items():
        plan = (steps, merge_steps, leap_at) if reduced else (steps, 0, None)
        step(f"{name}: {plan[0]} steps, {plan[1]} tdtm, leap {plan[2]}{f', {budget:.0f} MB' if budgeted else ''}")
        runs[name] = run_worker("pipeline", roots, *plan, budget if budgeted else None, module=__name__)
    table = rows(runs, (steps, merge_steps, leap_at))
    video = denoiser.manifest["video"]
    meta = {
        "artifact": f"{root} -> {decoder}" + (f" (captions: {text_encoder})" if text_encoder else ""),
        "target": denoiser.target,
        "latent_shape": video["latent_shape"],
        "tokens_per_frame": video["tokens_per_frame"],
        "depth": video["depth"],
        "random_weights": any(a.random_weights for a in artifacts),
        "cpu_count": os.cpu_count(),
        "steps": steps,
        "merge_steps": merge_steps,
        "leap_at": leap_at,
        "budget_mb": budget,
        "frames_shape": runs[contract.PLAIN]["frames_shape"],
        "prompt_text": PROMPT_TEXT if text_encoder else None,
        "legend": f"time rows: {steps} plain steps vs {merge_steps} tdtm + leap at {leap_at}, all resident; "
        f"peak RSS rows (tdtm + leap): all resident vs a {budget:.0f} MB budget",
    }
    goals = {}
    if (steps, merge_steps, leap_at) == (30, 15, 15):
        denoising = {name: run[contract.VIDEO_DENOISER]["ms"] for name, run in stage_table(runs).items()}
        goals["denoiser_time_ratio_le_0.45"] = (
            denoising["tdtm_lpl"] / denoising[contract.PLAIN] <= GOALS["sampling_ratio"]
        )
    out = out or root / "bench"
    out.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "rows": table, "goals": goals, "runs": runs}
    (out / "text_to_video_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "text_to_video_bench.md").write_text(markdown(meta, table))
    timeline_png({name: run["timeline"] for name, run in runs.items()}, out / "timeline.png")
    report["files"] = [str(out / n) for n in ("text_to_video_bench.json", "text_to_video_bench.md", "timeline.png")]
    return report


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _, *worker_args = json.loads(sys.argv[2])
        print(json.dumps(pipeline_worker(*worker_args)))
