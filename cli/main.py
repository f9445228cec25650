"""``edgetrim`` command line: export, run, presets. User errors: one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgetrim.runtime.errors import UserError

EXIT_USER_ERROR = 2
EXIT_VALIDATION_FAILED = 1
# (artifact kind, command) -> "module:function" taking the parsed args; vision encoders are handled here
FAMILY_COMMANDS: dict[tuple[str, str], str] = {}
FAMILY_COMMANDS.update(  # STDiT3 video denoisers (issue 4)
    {
        ("video-denoiser", "run"): "edgetrim.cli.video:cmd_run",
        ("video-denoiser", "bench"): "edgetrim.cli.video:cmd_bench",
        ("text-encoder", "run"): "edgetrim.cli.video:cmd_run_text",
    }
)
FAMILY_COMMANDS.update(  # whole VLMs: HiRED vision + LLM (issue 5)
    {("vlm", "run"): "edgetrim.cli.vlm:cmd_run", ("vlm", "bench"): "edgetrim.cli.vlm:cmd_bench"}
)
console = Console(stderr=False, highlight=False)
errors = Console(stderr=True, highlight=False)


def quiet_toolchains() -> None:
    """The exporters' stacks are chatty (coremltools, torchao, pytree deprecations): keep the terminal readable."""
    warnings.filterwarnings("ignore")
    logging.getLogger("torchao").setLevel(logging.CRITICAL)
    import torch  # its logging setup resets the levels: import first, then quiet it

    torch._logging.set_logs(all=logging.ERROR)
    for name in ("coremltools", "torch", "torchao", "executorch", "root", "onnxscript", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def export_summary(report: dict) -> Table:
    v = report["validation"]
    table = Table(title="edgetrim export", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    weights = "random (seeded preset: outputs are meaningless)" if report["random_weights"] else "from checkpoint"
    table.add_row("model", f"{report['model']}  (weights: {weights})")
    table.add_row("target", f"{report['target']} ({report['precision']})")
    table.add_row(
        "tokens kept K",
        f"{report['tokens']} of {report['available_tokens']} ({report['kept_fraction']:.1%}) "
        f"over {report['partitions']} partitions",
    )
    if v["status"] == "passed":
        worst = max((c.get("mismatched_positions", 0) for c in v["cases"]), default=0)
        table.add_row(
            "parity",
            f"passed on {len(v['cases'])} inputs: max abs error {v['max_abs_error']:.2e} (atol {v['atol']:g}), "
            f"kept positions identical ({worst} differ)",
        )
    elif v["status"] == "spec-only":
        table.add_row("parity", f"spec checked; {v['note']}")
    else:
        table.add_row("parity", "skipped (--no-validate)")
    table.add_row("artifact", f"{report['artifact']}  ({human_bytes(report['artifact_bytes'])})")
    if len(report["chunks"]) > 1:
        table.add_row("chunks", ", ".join(f"{c['name']} {human_bytes(c['bytes'])}" for c in report["chunks"]))
    t = report["timings_s"]
    table.add_row("time", ", ".join(f"{k.removesuffix('_s')} {v:.1f}s" for k, v in t.items()))
    return table


def cmd_export(args: argparse.Namespace) -> int:
    quiet_toolchains()
    from edgetrim.export.llm_presets import VLM_PRESETS  # whole VLM: HiRED vision + LLM (issue 5)
    from edgetrim.export.video_artifact import is_video_model  # STDiT3 presets / checkpoint folders (issue 4)

    is_vlm = args.with_llm or args.model in VLM_PRESETS
    if args.vision_int8 and not is_vlm:
        raise UserError("--vision-int8 applies to whole-VLM exports (a VLM preset or --with-llm): drop it")
    if is_video_model(args.model):
        from edgetrim.cli.video import cmd_export as export_video

        return export_video(args)
    if is_vlm:
        from edgetrim.cli.vlm import cmd_export as export_vlm

        return export_vlm(args)
    try:
        from edgetrim.export.pipeline import ExportOptions, export_artifact
        from edgetrim.export.validate import ValidationFailed
    except ImportError as exc:
        raise UserError(
            f"the exporter's dependencies are missing ({exc.name}): pip install 'edgetrim[export]'"
        ) from None
    opts = ExportOptions(
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
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(  # off when stderr is not a terminal: rich would leave a blank line there
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    ) as progress:
        task = progress.add_task("starting", total=None)
        try:
            report = export_artifact(opts, step=lambda name: progress.update(task, description=name))
        except ValidationFailed as exc:
            progress.stop()
            errors.print(f"error: validation failed: {exc}", markup=False)
            return EXIT_VALIDATION_FAILED
    console.print(export_summary(report))
    return 0


def family_command(kind: str, command: str):
    """The ``run`` / ``bench`` handler for an artifact kind other than vision-encoder (imported lazily)."""
    import importlib

    module, name = FAMILY_COMMANDS[(kind, command)].split(":")
    return getattr(importlib.import_module(module), name)


def artifact_kind(path: Path) -> str:
    from edgetrim.runtime.manifest import read_manifest

    return read_manifest(path).kind


def cmd_run(args: argparse.Namespace) -> int:
    from edgetrim.runtime.overlay import kept_overlay
    from edgetrim.runtime.preprocess import load_image
    from edgetrim.runtime.vision import VisionEncoder

    kind = artifact_kind(args.artifact)
    if (kind, "run") in FAMILY_COMMANDS:
        return family_command(kind, "run")(args)
    if args.image is None:
        raise UserError(f"{args.artifact} is a vision encoder: pass --image PATH")
    if args.overlay and args.overlay.suffix.lower() != ".png":
        raise UserError(f"--overlay {args.overlay} must end in .png: e.g. --overlay kept.png")
    image = load_image(args.image)
    encoder = VisionEncoder(args.artifact, memory_budget_mb=args.memory_budget)
    result = encoder.encode(image)
    m = encoder.artifact.manifest
    k = result.positions.shape[1]
    table = Table(title=f"edgetrim run {args.artifact}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    src = m["source"]
    table.add_row(
        "model",
        f"{src['name']}  (weights: {'random, outputs meaningless' if src['random_weights'] else 'checkpoint'})",
    )
    table.add_row("target", m["target"])
    table.add_row("chunks", f"{len(encoder.loader.names)}: {encoder.loader.plan.describe()}")
    table.add_row(
        "tokens K",
        f"{k} of {m['reduction']['available_tokens']} ({k / m['reduction']['available_tokens']:.1%})",
    )
    table.add_row("per partition", " ".join(str(int(b)) for b in result.partition_budgets[0]) + "  (full view, cells)")
    table.add_row("token shape", str(list(result.tokens.shape)))
    timings = {**encoder.load_ms, **result.timings_ms}
    table.add_row("timings", ", ".join(f"{n.removesuffix('_ms')} {v:.1f} ms" for n, v in timings.items()))
    if args.overlay:
        pp = m["preprocessing"]
        path = kept_overlay(
            encoder.views(image),
            result.positions[0],
            pp["patches_per_side"],
            Path(args.overlay),
            scale=max(1, 224 // pp["image_size"]),
        )
        table.add_row("overlay", str(path))
    if args.json:
        payload = {
            "tokens": k,
            "partition_budgets": result.partition_budgets[0].tolist(),
            "positions": result.positions[0].tolist(),
            "timings_ms": timings,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2))
    console.print(table)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from edgetrim.runtime.bench import MODES, bench

    kind = artifact_kind(args.artifact)
    if (kind, "bench") in FAMILY_COMMANDS:
        return family_command(kind, "bench")(args)

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    ) as progress:
        task = progress.add_task("bench", total=len(MODES))

        def step(mode: str) -> None:
            progress.update(
                task, description=f"{mode}: 1 + {args.repeats} invocations", advance=0 if mode == MODES[0] else 1
            )

        report = bench(args.artifact, args.memory_budget, args.repeats, args.out, step)
    meta, summary, results = report["meta"], report["summary"], report["results"]
    table = Table(
        title=f"edgetrim bench {meta['artifact']} ({meta['target']}, {summary['chunks']} chunks, "
        f"budget {meta['budget_mb']:.0f} MB)",
        title_justify="left",
    )
    for col in (
        "mode",
        "first call ms",
        f"latency ms (x{meta['repeats']})",
        "vs resident",
        "peak RSS MB",
        "vs resident",
    ):
        table.add_column(col, justify="right")
    base = results["resident"]
    for mode in MODES:
        r = results[mode]
        table.add_row(
            mode,
            f"{r['first_invocation_ms']:.0f}",
            f"{r['latency_ms']:.0f}",
            f"{r['latency_ms'] / base['latency_ms']:.2f}x",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x",
        )
    console.print(table)
    console.print(
        f"load hidden behind compute: {summary['load_overlap_fraction']:.0%} (timeline overlap), "
        f"{summary['load_hidden_fraction']:.0%} (latency vs naive); goals: "
        + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in summary["goals"].items())
    )
    if meta["random_weights"]:
        console.print("weights: random (seeded preset); timings and memory are those of the real shapes")
    console.print("wrote " + ", ".join(report["files"]))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    quiet_toolchains()
    from edgetrim.export.presets import DEFAULT_PRESET, PRESETS

    table = Table(title="presets (seeded random weights, real shapes)")
    for col in ("name", "family", "hidden", "layers", "image", "patch", "projector", "what"):
        table.add_column(col)
    for name, p in PRESETS.items():
        label = f"{name} (default)" if name == DEFAULT_PRESET else name
        table.add_row(
            label,
            p.family,
            str(p.hidden),
            str(p.layers),
            str(p.image_size),
            str(p.patch_size),
            str(p.projector_hidden or "-"),
            p.description,
        )
    console.print(table)
    console.print(other_presets())
    return 0


def other_presets() -> Table:
    """Whole-VLM, video-denoiser and text-encoder presets (seeded random weights too)."""
    from edgetrim.export.llm_presets import VLM_PRESETS
    from edgetrim.export.models.stdit3 import PRESETS as STDIT3_PRESETS
    from edgetrim.export.text_encoder import PRESETS as T5_PRESETS

    table = Table(title="pipeline presets (seeded random weights, real shapes)")
    for col in ("name", "kind", "what"):
        table.add_column(col)
    for name, v in VLM_PRESETS.items():
        table.add_row(name, "vlm (vision + LLM)", v.description)
    for name, d in STDIT3_PRESETS.items():
        table.add_row(name, "video-denoiser", d.description)
    for name, (config, length) in T5_PRESETS.items():
        table.add_row(
            name,
            "text-encoder",
            f"T5 encoder, {config['num_layers']} layers, d_model {config['d_model']}, captions of {length} tokens",
        )
    return table


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="edgetrim", description="Fixed-budget token reduction for on-device vision transformers")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    ex = sub.add_parser("export", help="export a model with a baked-in token-reduction graph")
    ex.add_argument("--target", required=True, help="onnx | coreml | executorch")
    ex.add_argument("--model", help="preset name, local Hugging Face folder, or hub id (default: clip-vit-b16)")
    ex.add_argument("--reduce", default="hired", help="hired (default) | none")
    ex.add_argument("--budget", default="0.2", help="fraction of tokens kept (0.2) or an absolute K (230)")
    ex.add_argument("--alpha", type=float, default=0.5, help="share of the budget for the full view (default 0.5)")
    ex.add_argument("--grid", default="2x2", help="AnyRes grid ROWSxCOLS; 1x1 for a single view (default 2x2)")
    ex.add_argument("--image-size", type=int, help="side of each view in pixels (default: the model's)")
    ex.add_argument("--feature-layer", type=int, help="LLaVA-style hidden-state index for folders (default -2 CLIP)")
    ex.add_argument("--out", type=Path, help="artifact folder (default artifacts/<model>-<reduce>-<target>)")
    ex.add_argument("--atol", type=float, default=1e-4, help="max abs error allowed in validation (default 1e-4)")
    prec = ex.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="fp16", action="store_true", default=None, help="fp16 weights/compute (coreml)")
    prec.add_argument("--fp32", dest="fp16", action="store_false", help="fp32 (default for onnx/executorch)")
    ex.add_argument("--no-validate", dest="validate", action="store_false", help="skip parity validation")
    chunking = ex.add_mutually_exclusive_group()
    chunking.add_argument("--chunks", type=int, help="split into N chunks: embedding, block groups, head")
    chunking.add_argument("--chunk-mb", type=float, help="split into block groups of at most M MB each")
    ex.set_defaults(func=cmd_export)

    run = sub.add_parser("run", help="run an ONNX or ExecuTorch artifact on an image (torch-free for ONNX)")
    run.add_argument("artifact", type=Path, help="artifact folder written by edgetrim export")
    run.add_argument("--image", type=Path, help="image file (vision encoders and VLMs)")
    run.add_argument("--overlay", type=Path, help="write a PNG of the kept patches over each view")
    run.add_argument("--json", type=Path, help="write K, budgets, positions and timings as JSON")
    run.add_argument("--memory-budget", type=float, help="MB: keep what fits resident, stream the other chunks")
    run.set_defaults(func=cmd_run)

    be = sub.add_parser("bench", help="measure resident vs streaming vs naive chunk loading on an artifact")
    be.add_argument("artifact", type=Path, help="artifact folder (ONNX or ExecuTorch), ideally chunked")
    be.add_argument("--memory-budget", type=float, help="MB for the streaming modes (default: two largest chunks)")
    be.add_argument("--repeats", type=int, default=20, help="repeated invocations after the first (default 20)")
    be.add_argument("--out", type=Path, help="folder for bench.json, bench.md, timeline.png (default DIR/bench)")
    be.set_defaults(func=cmd_bench)

    # video diffusion (STDiT3 with TDTM and LPL, issue 4): export latent shape, sampler options for run and bench
    ex.add_argument("--frames", type=int, help="STDiT3: latent frames T, even (default 20; 4 for tiny presets)")
    ex.add_argument("--height", type=int, help="STDiT3: latent height (default 20; 8 for tiny presets)")
    ex.add_argument("--width", type=int, help="STDiT3: latent width (default 27; 8 for tiny presets)")
    ex.add_argument("--cfg-batch", type=int, default=2, help="STDiT3: 2 = cond + uncond in one call (default), or 1")
    ex.add_argument("--caption-length", type=int, help="T5: caption tokens L (default 300; 8 for t5-tiny)")
    run.add_argument("--caption", type=Path, help="video: caption embeddings .npy/.npz (default: seeded random)")
    run.add_argument("--text-encoder", type=Path, help="video: text-encoder artifact to encode --prompt-text")
    run.add_argument("--prompt-text", help="video: caption text for --text-encoder")
    run.add_argument("--steps", type=int, default=30, help="video: sampling steps (default 30)")
    run.add_argument("--merge-steps", type=int, default=0, help="video: TDTM for the first M steps (default 0)")
    leap = run.add_mutually_exclusive_group()
    leap.add_argument("--leap-at", type=int, help="video: LPL fixed, leap to the end at step N")
    leap.add_argument("--lpl", action="store_true", help="video: LPL adaptive (cosine of consecutive velocities)")
    run.add_argument("--lpl-min-steps", type=int, default=10, help="video: no adaptive leap before this step")
    run.add_argument("--guidance", type=float, help="video: classifier-free guidance scale (default 7.0)")
    run.add_argument("--seed", type=int, default=0, help="video: noise seed (default 0)")
    run.add_argument("--out", type=Path, help="video: folder for latent.npy, contact_sheet.png (default DIR/run)")
    run.add_argument("--noise", type=Path, help="video: initial latent .npy [C, T, H, W] (default: seeded noise)")
    be.add_argument("--steps", type=int, default=30, help="video: sampling steps of the baseline (default 30)")
    be.add_argument("--merge-steps", type=int, help="video: TDTM steps of the candidate (default steps/2)")
    be.add_argument("--leap-at", type=int, help="video: leap step of the candidate (default steps/2)")
    be.add_argument("--step-repeats", type=int, default=3, help="video: repeats of the one-step timing (default 3)")

    # whole VLM (HiRED vision + LLM prefill/decode, issue 5): export, run and bench options
    ex.add_argument("--with-llm", action="store_true", help="VLM: export a LLaVA folder's vision + language model")
    ex.add_argument("--template", help="VLM: prompt template with <image> and {prompt} (default: the family's)")
    ex.add_argument("--prefill-length", type=int, help="VLM: static prefill length P (default K + 64)")
    ex.add_argument("--max-length", type=int, help="VLM: KV-cache length L (default P + 64)")
    ex.add_argument("--llm-chunks", type=int, default=1, help="VLM: layer groups per LLM graph (default 1)")
    ex.add_argument(
        "--vision-int8",
        action="store_true",
        help="VLM, ONNX: dynamic int8 MatMuls in the vision encoder (faster; checked for fidelity to fp32, not parity)",
    )
    run.add_argument("--prompt", default="Describe the image in one sentence.", help="VLM: the question")
    run.add_argument("--max-new-tokens", type=int, default=32, help="VLM: greedy tokens to generate (default 32)")
    be.add_argument("--budgets", default="1.0,0.5,0.2,0.1", help="VLM: budgets to compare (1.0 = no reduction)")
    be.add_argument("--max-new-tokens", type=int, default=16, help="VLM: fixed output length (default 16)")
    be.add_argument("--runs", type=int, default=3, help="VLM: interleaved rounds per budget (default 3)")

    pr = sub.add_parser("presets", help="list built-in presets")
    pr.set_defaults(func=cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        errors.print(f"error: {exc}", markup=False, soft_wrap=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        errors.print("interrupted", markup=False)
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
