"""``edgetrim export / run / bench`` for whole VLMs (HiRED vision + LLM prefill/decode), routed from cli/main.py."""

from __future__ import annotations

import argparse
import sys

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgetrim.cli.main import EXIT_VALIDATION_FAILED, console, errors, human_bytes, quiet_toolchains
from edgetrim.runtime.errors import UserError

MEANINGLESS = "random (seeded preset): the generated text is meaningless"


def progress_bar() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    )


def kv_table(title: str) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    return table


def cmd_export(args: argparse.Namespace) -> int:
    from edgetrim.export.pipeline import ExportOptions
    from edgetrim.export.validate import ValidationFailed
    from edgetrim.export.vlm import VlmOptions, export_vlm

    vision = ExportOptions(
        target=args.target,
        model=args.model,
        reduce=args.reduce,
        budget=args.budget,
        alpha=args.alpha,
        grid=args.grid,
        image_size=args.image_size,
        out=args.out,
        atol=args.atol,
        fp16=args.fp16,
        validate=args.validate,
        feature_layer=args.feature_layer,
        chunks=args.chunks,
        chunk_mb=args.chunk_mb,
    )
    opts = VlmOptions(
        vision,
        args.template,
        args.prefill_length,
        args.max_length,
        llm_chunks=args.llm_chunks,
        vision_int8=args.vision_int8,
    )
    with progress_bar() as progress:
        task = progress.add_task("starting", total=None)
        try:
            report = export_vlm(opts, step=lambda name: progress.update(task, description=name))
        except ValidationFailed as exc:
            progress.stop()
            errors.print(f"error: validation failed: {exc}", markup=False)
            return EXIT_VALIDATION_FAILED
    table = kv_table("edgetrim export (whole VLM)")
    weights = MEANINGLESS if report["random_weights"] else "from checkpoint"
    table.add_row("model", f"{report['model']}  (weights: {weights})")
    vision_kind = "vision int8-dynamic, language model " if report["vision_int8"] else ""
    table.add_row("target", f"{report['target']} ({vision_kind}{report['precision']})")
    table.add_row(
        "visual tokens K",
        f"{report['tokens']} of {report['available_tokens']} ({report['kept_fraction']:.1%}) "
        f"over {report['partitions']} partitions",
    )
    table.add_row(
        "language model",
        f"{report['llm_layers']} layers, prefill P {report['prefill_length']}, KV cache L {report['max_length']}, "
        f"embedding table {report['embedding_dtype']}",
    )
    v, lv = report["validation"], report["llm_validation"]
    if v["status"] == "passed":
        table.add_row("vision parity", f"passed: max abs error {v['max_abs_error']:.2e} (atol {v['atol']:g})")
    elif v["status"] == "fidelity":
        table.add_row("vision fidelity", f"passed: {v['note']}")
    else:
        table.add_row("parity", v["note"] or v["status"])
    if lv["status"] == "passed":
        fed = "the artifact's own visual tokens" if report["vision_int8"] else "the PyTorch HiRED tokens"
        table.add_row(
            "LLM parity",
            f"passed vs transformers fed {fed}: first-token logits max abs error "
            f"{lv['first_logits_max_abs_error']:.2e}, greedy tokens identical {lv['tokens']}",
        )
    table.add_row("artifact", f"{report['artifact']}  ({human_bytes(report['artifact_bytes'])})")
    table.add_row("chunks", ", ".join(f"{c['name']} {human_bytes(c['bytes'])}" for c in report["chunks"]))
    table.add_row("time", ", ".join(f"{k.removesuffix('_s')} {t:.1f}s" for k, t in report["timings_s"].items()))
    console.print(table)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edgetrim.runtime.preprocess import load_image
    from edgetrim.runtime.vlm import VlmPipeline

    if args.image is None:
        raise UserError(f"{args.artifact} is a VLM: pass --image PATH and --prompt TEXT")
    image = load_image(args.image)
    pipeline = VlmPipeline(args.artifact, memory_budget_mb=args.memory_budget)
    m = pipeline.artifact.manifest
    random = m["source"]["random_weights"]

    def stream(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        result = pipeline.generate(image, args.prompt, args.max_new_tokens, on_text=stream)
    finally:
        pipeline.close()
    sys.stdout.write("\n")
    t, gen = result.timings_ms, result.generation
    table = kv_table(f"edgetrim run {args.artifact}")
    table.add_row("model", f"{m['source']['name']}  (weights: {MEANINGLESS if random else 'checkpoint'})")
    table.add_row("target", m["target"])
    table.add_row(
        "visual tokens K",
        f"{result.visual_tokens} of {m['reduction']['available_tokens']} ({m['reduction']['kept_fraction']:.1%})",
    )
    table.add_row("prompt", f"{result.prompt_tokens} tokens (visual included) of prefill {m['llm']['prefill_length']}")
    table.add_row("generated", f"{len(result.tokens)} tokens")
    table.add_row(
        "timings",
        f"preprocess {t['preprocess_ms']:.1f} ms, vision {t['vision_ms']:.1f} ms, prefill {t['prefill_ms']:.1f} ms",
    )
    table.add_row("TTFT", f"{t['ttft_ms']:.1f} ms (image in -> first token)")
    table.add_row("decode", f"{gen.decode_tokens_per_s:.1f} tokens/s ({len(gen.step_s)} steps)")
    table.add_row("load", ", ".join(f"{k.removesuffix('_ms')} {v:.0f} ms" for k, v in pipeline.load_ms.items()))
    if args.memory_budget is not None:
        table.add_row("memory", f"per pipeline within {args.memory_budget:g} MB: {pipeline.vision.plan.describe()}")
    console.print(table)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edgetrim.runtime.manifest import read_manifest
    from edgetrim.runtime.vlm_bench import bench_vlm, target_label

    manifest = read_manifest(args.artifact).manifest
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    try:
        if not budgets or any(not 0 < float(b) <= 1 for b in budgets):
            raise ValueError
    except ValueError:
        raise UserError(f"--budgets {args.budgets!r}: pass fractions in (0, 1], e.g. 1.0,0.5,0.2,0.1") from None
    out = args.out or args.artifact / "bench"
    with progress_bar() as progress:
        task = progress.add_task("bench", total=None)

        def step(name: str) -> None:
            progress.update(task, description=name)

        try:
            from edgetrim.export.vlm import budget_variant
        except ImportError as exc:
            raise UserError(
                f"exporting the other budgets needs the exporter ({exc.name}): pip install 'edgetrim[export]'"
            ) from None
        quiet_toolchains()
        roots = [budget_variant(args.artifact, budget, out / "artifacts", step) for budget in budgets]
        meta = {
            "model": manifest["source"]["name"],
            "target": manifest["target"],
            "vision_int8": manifest["llm"]["export"].get("vision_int8", False),
            "random_weights": manifest["source"]["random_weights"],
            "budgets": budgets,
        }
        report = bench_vlm(roots, out, args.max_new_tokens, args.runs, meta, step)
    table = Table(
        title=f"edgetrim bench {manifest['source']['name']} ({target_label(report['meta'])}, "
        f"{args.max_new_tokens} new tokens, "
        f"median of {args.runs})",
        title_justify="left",
    )
    cols = ("budget", "K", "P", "vision ms", "prefill ms", "TTFT ms", "vs 100%", "decode tok/s", "peak MB", "vs 100%")
    for col in cols:
        table.add_column(col, justify="right")
    for r in report["rows"]:
        table.add_row(
            "100% (none)" if r["method"] == "none" else f"{float(r['requested_budget']):.0%}",
            str(r["visual_tokens"]),
            str(r["prefill_length"]),
            f"{r['vision_ms']:.0f}",
            f"{r['prefill_ms']:.0f}",
            f"{r['ttft_ms']:.0f}",
            f"{r['ttft_ratio']:.2f}x",
            f"{r['decode_tokens_per_s']:.1f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['peak_rss_ratio']:.2f}x",
        )
    console.print(table)
    if report["goals"]:
        console.print("goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in report["goals"].items()))
    if manifest["source"]["random_weights"]:
        console.print("weights: random (seeded preset); timings and memory are those of the real shapes")
    console.print("wrote " + ", ".join(report["files"]))
    return 0
