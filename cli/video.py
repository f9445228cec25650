"""``edgetrim export / run / bench`` for STDiT3 video denoisers (and their T5 text encoders)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgetrim.cli.main import EXIT_VALIDATION_FAILED, console, errors, human_bytes, quiet_toolchains
from edgetrim.runtime.errors import UserError

RANDOM_NOTE = "random (seeded preset): outputs are meaningless, timings and memory are those of the real shapes"


def progress_bar(total: int | None) -> Progress:
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total:
        columns += [BarColumn(), MofNCompleteColumn()]
    return Progress(*columns, TimeElapsedColumn(), console=errors, transient=True, disable=not errors.is_terminal)


def summary_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


def cmd_export(args: argparse.Namespace) -> int:
    """STDiT3 (preset or checkpoint folder) -> video-denoiser artifact; T5 folders -> text-encoder artifact."""
    quiet_toolchains()
    from edgetrim.export.text_encoder import is_t5
    from edgetrim.export.validate import ValidationFailed
    from edgetrim.export.video_artifact import VideoExportOptions, export_video_artifact

    if is_t5(args.model):
        return cmd_export_text(args)

    opts = VideoExportOptions(
        target=args.target,
        model=args.model,
        frames=args.frames,
        height=args.height,
        width=args.width,
        batch=args.cfg_batch,
        out=args.out,
        atol=args.atol,
        fp16=args.fp16,
        validate=args.validate,
    )
    with progress_bar(None) as progress:
        task = progress.add_task("starting", total=None)
        try:
            report = export_video_artifact(opts, step=lambda name: progress.update(task, description=name))
        except ValidationFailed as exc:
            progress.stop()
            errors.print(f"error: validation failed: {exc}", markup=False)
            return EXIT_VALIDATION_FAILED
    v = report["validation"]
    if v["status"] == "passed":
        parity = (
            f"passed: {len(v['cases'])} chunk functions (plain and tdtm of every depth step) vs PyTorch, "
            f"max abs error {v['max_abs_error']:.2e} (atol {v['atol']:g})"
        )
    elif v["status"] == "spec-only":
        parity = f"spec checked ({', '.join(c['case'] for c in v['cases'])}); {v['note']}"
    else:
        parity = "skipped (--no-validate)"
    weights = RANDOM_NOTE if report["random_weights"] else "from checkpoint"
    rows = [
        ("model", f"{report['model']}  (weights: {weights})"),
        ("target", f"{report['target']} ({report['precision']})"),
        ("latent", f"{report['latent_shape']} -> {report['tokens_per_frame']} tokens per frame"),
        ("chunks", ", ".join(f"{c['name']} {human_bytes(c['bytes'])}" for c in report["chunks"])),
        (
            "size",
            f"{human_bytes(report['artifact_bytes'])} with plain + tdtm vs {human_bytes(report['one_variant_bytes'])} "
            f"plain only: {report['two_variant_ratio']:.3f}x ({report['size_note']})",
        ),
        ("FLOPs", f"TDTM depth step / plain = {report['flops_ratio_depth_step']:.3f}"),
        ("parity", parity),
        ("artifact", report["artifact"]),
        ("time", ", ".join(f"{k.removesuffix('_s')} {t:.1f}s" for k, t in report["timings_s"].items())),
    ]
    console.print(summary_table("edgetrim export (video denoiser)", rows))
    return 0


def cmd_export_text(args: argparse.Namespace) -> int:
    """T5 encoder (preset or save_pretrained folder) -> text-encoder artifact, one chunk per block."""
    from edgetrim.export.text_encoder import TextExportOptions, export_text_encoder
    from edgetrim.export.validate import ValidationFailed

    opts = TextExportOptions(args.target, args.model, args.caption_length, args.out, args.atol, args.validate)
    with progress_bar(None) as progress:
        task = progress.add_task("starting", total=None)
        try:
            report = export_text_encoder(opts, step=lambda name: progress.update(task, description=name))
        except ValidationFailed as exc:
            progress.stop()
            errors.print(f"error: validation failed: {exc}", markup=False)
            return EXIT_VALIDATION_FAILED
    v = report["validation"]
    rows = [
        ("model", f"{report['model']}  (weights: {RANDOM_NOTE if report['random_weights'] else 'from folder'})"),
        ("target", report["target"]),
        ("chunks", ", ".join(f"{c['name']} {human_bytes(c['bytes'])}" for c in report["chunks"])),
        ("max length", str(report["max_length"])),
        (
            "parity",
            f"passed vs transformers T5EncoderModel: max abs error {v['max_abs_error']:.2e} (atol {v['atol']:g})"
            if v["status"] == "passed"
            else v["status"],
        ),
        ("artifact", report["artifact"]),
    ]
    console.print(summary_table("edgetrim export (text encoder)", rows))
    return 0


def cmd_run_text(args: argparse.Namespace) -> int:
    """Encode --prompt-text; writes caption.npz (caption [L, D], mask [L]) for ``edgetrim run VIDEO --caption``."""
    import numpy as np

    from edgetrim.runtime.text import encode_text

    if not args.prompt_text:
        raise UserError(f"{args.artifact} is a text encoder: pass --prompt-text TEXT")
    embeds, mask = encode_text(args.artifact, args.prompt_text, args.memory_budget)
    out = args.out or args.artifact / "run"
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "caption.npz", caption=embeds, mask=mask)
    rows = [
        ("prompt", repr(args.prompt_text)),
        ("tokens", f"{int(mask.sum())} of {len(mask)}"),
        ("embeddings", str(list(embeds.shape))),
        ("wrote", str(out / "caption.npz")),
    ]
    console.print(summary_table(f"edgetrim run {args.artifact} (text encoder)", rows))
    return 0


def leap_plan(args: argparse.Namespace, steps: int):
    """(leap_at, adaptive rule) from --leap-at / --lpl, checked."""
    from edgetrim.runtime.sampler import LeapRule

    if args.lpl:  # argparse keeps --lpl and --leap-at exclusive
        if not 1 <= args.lpl_min_steps < steps:
            raise UserError(f"--lpl-min-steps {args.lpl_min_steps} is outside 1..{steps - 1} (--steps {steps})")
        return None, LeapRule(min_steps=args.lpl_min_steps)
    return args.leap_at, None


def load_noise(path: Path):
    """--noise FILE: an initial latent [C, T, H, W] (.npy)."""
    import numpy as np

    if not path.is_file():
        raise UserError(f"--noise {path} does not exist: pass a .npy latent [C, T, H, W]")
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (ValueError, OSError) as exc:
        raise UserError(f"--noise {path} is not a .npy file ({exc}): save it with numpy.save") from None


def cmd_run(args: argparse.Namespace) -> int:
    """Sample a latent video; writes latent.npy, contact_sheet.png and run.json under --out."""
    import numpy as np

    from edgetrim.runtime.sampler import check_plan
    from edgetrim.runtime.video import VideoDenoiser, contact_sheet, load_caption, random_caption

    steps = args.steps
    check_plan(steps, args.merge_steps, args.leap_at)
    leap_at, rule = leap_plan(args, steps)
    if args.caption is not None and args.text_encoder is not None:
        raise UserError("--caption and --text-encoder both set: pass caption embeddings or a text encoder, not both")
    out = args.out or args.artifact / "run"
    noise = load_noise(args.noise) if args.noise is not None else None
    with VideoDenoiser(args.artifact, args.memory_budget) as denoiser:
        length, channels = denoiser.caption_shape()
        if args.caption is not None:
            caption, caption_note = load_caption(args.caption, length, channels), str(args.caption)
        elif args.text_encoder is not None:
            from edgetrim.runtime.text import encode_prompt

            caption = encode_prompt(args.text_encoder, args.prompt_text, length, channels, args.memory_budget)
            caption_note = f"{args.prompt_text!r} encoded by {args.text_encoder}"
        else:
            caption, caption_note = random_caption(length, channels, args.seed), f"seeded random stand-in ({args.seed})"
        with progress_bar(steps) as progress:
            task = progress.add_task("denoising", total=steps)
            result = denoiser.generate(
                caption,
                steps,
                args.merge_steps,
                leap_at,
                rule,
                args.guidance,
                args.seed,
                progress=lambda i: progress.update(task, completed=i + 1),
                noise=noise,
            )
        video = denoiser.video
        plan = denoiser.loader.plan.describe()
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "latent.npy", result.latent)
    sheet = contact_sheet(result.latent, out / "contact_sheet.png")
    src = denoiser.artifact.manifest["source"]
    payload = {
        "latent_shape": list(result.latent.shape),
        "steps": steps,
        "steps_run": result.steps_run,
        "leap_step": result.leap_step,
        "functions": result.functions,
        "step_ms": result.step_ms,
        "cosine_similarities": result.similarities,
        "random_weights": src["random_weights"],
    }
    (out / "run.json").write_text(json.dumps(payload, indent=2) + "\n")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    tdtm = result.functions.count("tdtm")
    leap = (
        f"leapt at step {result.leap_step} ({'adaptive LPL' if rule else 'fixed'})"
        if result.leap_step is not None
        else "no leap"
    )
    per_function = {
        f: [ms for ms, g in zip(result.step_ms, result.functions, strict=True) if g == f] for f in ("tdtm", "plain")
    }
    per_step = ", ".join(f"{f} {sum(v) / len(v):.0f} ms" for f, v in per_function.items() if v)
    rows = [
        ("model", f"{src['name']}  (weights: {RANDOM_NOTE if src['random_weights'] else 'checkpoint'})"),
        ("target", f"{denoiser.artifact.target}; chunks: {plan}"),
        ("caption", caption_note),
        ("latent", f"{list(result.latent.shape)} ({video['tokens_per_frame']} tokens per frame)"),
        ("steps", f"{result.steps_run} of {steps} run: {tdtm} tdtm + {result.steps_run - tdtm} plain; {leap}"),
        ("time per step", f"{per_step} (mean), total {sum(result.step_ms) / 1e3:.1f} s"),
        ("wrote", f"{out / 'latent.npy'}, {sheet}, {out / 'run.json'}"),
    ]
    console.print(summary_table(f"edgetrim run {args.artifact}", rows))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """TDTM vs plain step, 30 plain steps vs TDTM + leap, 2-block budget vs resident; JSON + markdown."""
    from edgetrim.runtime.video_bench import bench_video

    with progress_bar(None) as progress:
        task = progress.add_task("bench", total=None)
        report = bench_video(
            args.artifact,
            steps=args.steps,
            merge_steps=args.merge_steps,
            leap_at=args.leap_at,
            repeats=args.step_repeats,
            out=args.out,
            step=lambda name: progress.update(task, description=name),
        )
    table = Table(title=f"edgetrim bench {args.artifact} ({report['meta']['target']}, video)", title_justify="left")
    for col in ("measurement", "baseline", "candidate", "ratio", "reference", "goal"):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    for r in report["rows"]:
        table.add_row(r["measurement"], r["baseline"], r["candidate"], f"{r['ratio']:.3f}x", r["reference"], r["goal"])
    console.print(table)
    console.print("goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in report["goals"].items()))
    if report["meta"]["random_weights"]:
        console.print("weights: random (seeded preset); timings and memory are those of the real shapes")
    console.print("wrote " + ", ".join(report["files"]))
    return 0
