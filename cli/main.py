"""``edgetrim`` command line: parses flags into the library's options and renders what it returns.

Exit codes: 0 done; 2 the user's input (one line on stderr naming the flag and the fix); 1 a failed
validation or an edgetrim bug (one line; an unexpected exception also prints its traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
import warnings
from pathlib import Path

from edgetrim.cli import render
from edgetrim.runtime.errors import EdgetrimBug, UserError
from edgetrim.runtime.verify_stamp import ONCE, POLICIES

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1
EXPORT_DEPS = ("torch", "executorch", "coremltools", "onnx", "onnxscript", "transformers", "optimum", "safetensors")
EXPORT_DEPS += ("huggingface_hub", "torchao")
VERIFY_HELP = "sha256 the files once, then trust them while unchanged (once, default), or on every open (always)"


def quiet_toolchains() -> None:
    """The exporters' stacks are chatty (coremltools, torchao, pytree deprecations): keep the terminal readable."""
    warnings.filterwarnings("ignore")
    logging.getLogger("torchao").setLevel(logging.CRITICAL)
    import torch  # its logging setup resets the levels: import first, then quiet it

    torch._logging.set_logs(all=logging.ERROR)
    for name in ("coremltools", "torch", "torchao", "executorch", "root", "onnxscript", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)


def exporter():
    """The exporter's modules, or one line naming the extra to install (a runtime-only install lacks them)."""
    try:
        quiet_toolchains()
        from edgetrim.export import build, options, presets

        return build, options, presets
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in EXPORT_DEPS:
            raise
        missing = f"exporting needs the exporter's dependencies ({exc.name} is missing)"
        raise UserError(f"{missing}: pip install 'edgetrim[export]'") from None


def cmd_export(args: argparse.Namespace) -> int:
    build, options, _ = exporter()
    opts = options.ExportOptions(**{k: v for k, v in vars(args).items() if k not in ("command", "func")})
    with render.progress() as (show, _):
        report = build.export(opts, step=show)
    render.export_summary(report)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edgetrim.runtime import contract
    from edgetrim.runtime.manifest import read_manifest
    from edgetrim.runtime.run import RunOptions, run

    opts = RunOptions(**{k: v for k, v in vars(args).items() if k not in ("command", "func", "artifact")})
    if read_manifest(args.artifact).kind == contract.VIDEO_DENOISER:  # a bar over the sampling steps
        with render.progress() as (_, advance):
            kind, summary = run(args.artifact, opts, progress=advance)
    else:  # generated text streams to stdout as it decodes
        kind, summary = run(args.artifact, opts)
    render.run_summary(args.artifact, kind, summary, opts)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edgetrim.runtime import contract
    from edgetrim.runtime.bench import BenchOptions
    from edgetrim.runtime.manifest import read_manifest, verify_artifact

    opts = BenchOptions(**{k: v for k, v in vars(args).items() if k not in ("command", "func", "artifact")})
    artifact = read_manifest(args.artifact)
    kind = artifact.kind
    opts.check(kind)
    verify_artifact(artifact, opts.verify or ONCE)  # --verify; the measurements' opens then find the stamp
    out = opts.out or args.artifact / "bench"
    if opts.onnx_load:
        from edgetrim.runtime.load_bench import bench_load

        with render.progress() as (show, _):
            report = bench_load(args.artifact, opts.runs or 3, 10 if opts.repeats is None else opts.repeats, out, show)
        render.load_summary(report)
        return 0
    with render.progress() as (show, _):
        if kind == contract.VLM:
            exporter()
            from edgetrim.calib.sweep import bench_budgets, parse_budgets, parse_precisions
            from edgetrim.runtime.genai_bench import parse_precisions as parse_genai

            budgets = parse_budgets(opts.budgets or "1.0,0.5,0.2,0.1")
            precisions = parse_precisions(opts.precisions) if opts.precisions else None
            genai = parse_genai(opts.genai) if opts.genai is not None else None
            tokens, runs = opts.max_new_tokens or 16, opts.runs or 3
            report = bench_budgets(args.artifact, budgets, out, tokens, runs, show, precisions, genai)
        elif kind == contract.VIDEO_DENOISER and opts.decoder is not None:
            from edgetrim.runtime.text_to_video_bench import bench_text_to_video

            steps, merge, leap, budget = opts.steps or 30, opts.merge_steps, opts.leap_at, opts.memory_budget_mb
            report = bench_text_to_video(
                args.artifact, opts.decoder, opts.text_encoder, steps, merge, leap, budget, out, show
            )
        elif kind == contract.VIDEO_DENOISER:
            from edgetrim.runtime.video_bench import bench_video

            repeats = 3 if opts.step_repeats is None else opts.step_repeats
            report = bench_video(args.artifact, opts.steps or 30, opts.merge_steps, opts.leap_at, repeats, out, show)
        else:
            from edgetrim.runtime.bench import bench

            repeats = 20 if opts.repeats is None else opts.repeats
            report = bench(args.artifact, opts.memory_budget_mb, repeats, out, show)
    render.bench_summary(kind, report)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    exporter()
    from edgetrim.calib.calibrate import CalibrateOptions, calibrate

    opts = CalibrateOptions(**{k: v for k, v in vars(args).items() if k not in ("command", "func")})
    with render.progress() as (show, advance):
        report = calibrate(opts, step=show, advance=advance)
    render.calibrate_summary(report)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    _, _, presets = exporter()
    render.presets_table(presets.PRESETS, presets.vision.DEFAULT_PRESET)
    return 0


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def export_parser(sub) -> None:
    ex = sub.add_parser("export", help="export a model with a baked-in token-reduction graph")
    ex.add_argument("--target", required=True, help="onnx | coreml | executorch")
    ex.add_argument("--model", help="preset name (edgetrim presets), model folder, or hub id (default: clip-vit-b16)")
    ex.add_argument("--out", type=Path, help="artifact folder (default artifacts/<model>-<kind>-<target>)")
    ex.add_argument("--atol", type=float, default=1e-4, help="max abs error allowed in validation (default 1e-4)")
    prec = ex.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="fp16", action="store_true", default=None, help="fp16 weights/compute (coreml)")
    prec.add_argument("--fp32", dest="fp16", action="store_false", help="fp32 (default for onnx/executorch)")
    ex.add_argument("--no-validate", dest="validate", action="store_false", help="skip validation")
    vision = ex.add_argument_group("vision-encoder and vlm models")
    vision.add_argument("--reduce", help="hired (default) | none")
    vision.add_argument(
        "--budget", help="fraction of tokens kept (0.2, default), an absolute K (230), or auto (--calibration)"
    )
    vision.add_argument("--calibration", type=Path, help="with --budget auto: the --out folder of edgetrim calibrate")
    vision.add_argument("--alpha", type=float, help="share of the budget for the full view (default 0.5)")
    vision.add_argument("--grid", help="AnyRes grid ROWSxCOLS; 1x1 for a single view (default 2x2)")
    vision.add_argument("--image-size", type=int, help="side of each view in pixels (default: the model's)")
    vision.add_argument("--feature-layer", type=int, help="LLaVA-style hidden-state index for folders (CLIP -2)")
    chunking = vision.add_mutually_exclusive_group()
    chunking.add_argument("--chunks", type=int, help="split into N chunks: embedding, block groups, head")
    chunking.add_argument("--chunk-mb", type=float, help="split into block groups of at most M MB each")
    vlm = ex.add_argument_group("vlm models (a VLM preset, or a LLaVA folder with --with-llm)")
    vlm.add_argument("--with-llm", action="store_true", help="export a LLaVA folder's vision + language model")
    vlm.add_argument("--template", help="prompt template with <image> and {prompt} (default: the family's)")
    quant = ex.add_argument_group(
        "quantization (vision-encoder, video-denoiser, text-encoder: int8; vlm and language-model: int8, int4)"
    )
    quant.add_argument("--quantize", help="none (default) | int8 | int4: vision int8, LM layers int8/int4, head int8")
    quant.add_argument("--calib-images", type=Path, help="folder of calibration images (default: built-in set)")
    quant.add_argument("--calib-prompts", type=Path, help="calibration prompts, one a line (default: built-in)")
    quant.add_argument("--gate-overlap", type=float, help="vision: min share of kept positions as float (0.9)")
    quant.add_argument("--gate-token-cosine", type=float, help="vision: min cosine of shared tokens (0.99)")
    quant.add_argument("--gate-top1", type=float, help="LM: min share of first tokens as float (0.9)")
    quant.add_argument("--gate-logit-cosine", type=float, help="LM: min cosine of first-token logits (0.99)")
    quant.add_argument("--gate-greedy", type=float, help="LM: min mean greedy agreement (0.75)")
    quant.add_argument(
        "--gate-velocity-cosine", type=float, help="video denoiser: min velocity cosine per step and CFG half (0.99)"
    )
    quant.add_argument(
        "--gate-caption-cosine", type=float, help="text encoder: min caption embedding cosine, every position (0.99)"
    )
    lm = ex.add_argument_group("vlm and language-model models")
    lm.add_argument("--prefill-length", type=int, help="static prefill length P (default K + 64)")
    lm.add_argument(
        "--prefill-buckets",
        help="smaller prefill lengths sharing the weights, e.g. 96,128, or none (default K+32, K+16)",
    )
    lm.add_argument("--max-length", type=int, help="KV-cache length L (default P + 64)")
    lm.add_argument("--llm-chunks", type=int, help="layer groups per LLM graph (default 1)")
    lm.add_argument(
        "--kv-cache",
        choices=["state", "io"],
        help="coreml: the KV cache as model state (iOS 18, default) or as inputs/outputs (iOS 17)",
    )
    lm.add_argument(
        "--llm-ops",
        help="onnx: layers as ONNX Runtime's fused contrib ops (GroupQueryAttention...; default) or standard "
        "ONNX ops only (TensorRT, other runtimes)",
    )
    video = ex.add_argument_group("video-denoiser (STDiT3) and video-decoder (Open-Sora VAE) models")
    video.add_argument("--frames", type=int, help="latent frames T (default 20; denoisers: even, tiny 4; tiny-vae 5)")
    video.add_argument("--height", type=int, help="latent height (default 20; 8 for tiny denoisers, 4 tiny-vae)")
    video.add_argument("--width", type=int, help="latent width (default 27; 8 for tiny denoisers, 4 tiny-vae)")
    video.add_argument("--cfg-batch", type=int, help="denoiser: 2 = cond + uncond in one call (default), or 1")
    video.add_argument("--micro-batch", type=int, help="decoder: frames per spatial decode (default the VAE's, 4)")
    video.add_argument("--denoiser", type=Path, help="decoder: the video-denoiser artifact it decodes (checked)")
    text = ex.add_argument_group("text-encoder models (T5)")
    text.add_argument("--caption-length", type=int, help="caption tokens L (default 300; 8 for t5-tiny)")
    ex.set_defaults(func=cmd_export)


def run_parser(sub) -> None:
    run = sub.add_parser("run", help="run an artifact (torch-free for ONNX)")
    run.add_argument("artifact", type=Path, help="artifact folder written by edgetrim export")
    run.add_argument("--memory-budget", dest="memory_budget_mb", type=float, help="MB: stream what does not fit")
    run.add_argument("--verify", choices=POLICIES, help=VERIFY_HELP)
    seen = run.add_argument_group("vision-encoder and vlm artifacts")
    seen.add_argument("--image", type=Path, help="image file")
    seen.add_argument("--overlay", type=Path, help="vision-encoder: write a PNG of the kept patches over each view")
    seen.add_argument("--json", type=Path, help="vision-encoder / video: write the run's record as JSON")
    text = run.add_argument_group("vlm and language-model artifacts")
    text.add_argument("--prompt", help="the question / prompt text")
    text.add_argument("--max-new-tokens", type=int, help="greedy tokens to generate (default 32)")
    video = run.add_argument_group("video-denoiser artifacts (with a text encoder and a decoder: text to video)")
    video.add_argument("--caption", type=Path, help="caption embeddings .npy/.npz (default: seeded random)")
    video.add_argument("--text-encoder", type=Path, help="text-encoder artifact to encode --prompt-text")
    video.add_argument("--prompt-text", help="caption text (for --text-encoder, or a text-encoder artifact)")
    video.add_argument("--steps", type=int, help="sampling steps (default 30)")
    video.add_argument("--merge-steps", type=int, help="TDTM for the first M steps (default 0)")
    video.add_argument("--leap-at", type=int, help="LPL fixed: leap to the end at step N")
    video.add_argument("--lpl", action="store_true", help="LPL adaptive (cosine of consecutive velocities)")
    video.add_argument("--lpl-min-steps", type=int, help="no adaptive leap before this step (default 10)")
    video.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 7.0)")
    video.add_argument("--seed", type=int, help="noise seed (default 0)")
    video.add_argument("--noise", type=Path, help="initial latent .npy [C, T, H, W] (default: seeded noise)")
    video.add_argument("--decoder", type=Path, help="video-decoder artifact: decode the latent to video.mp4 + GIF")
    video.add_argument("--out", type=Path, help="folder for the outputs (default DIR/run)")
    decoder = run.add_argument_group("video-decoder artifacts")
    decoder.add_argument("--latent", type=Path, help="latent .npy [C, T, h, w] -> video.mp4 + video.gif + run.json")
    run.set_defaults(func=cmd_run)


def bench_parser(sub) -> None:
    be = sub.add_parser("bench", help="measure an artifact side by side with its baseline")
    be.add_argument("artifact", type=Path, help="artifact folder")
    be.add_argument("--out", type=Path, help="folder for the JSON, markdown and PNG (default DIR/bench)")
    be.add_argument("--verify", choices=POLICIES, help=VERIFY_HELP)
    chunks = be.add_argument_group("vision-encoder and text-encoder artifacts: resident vs streaming vs naive")
    chunks.add_argument(
        "--memory-budget", dest="memory_budget_mb", type=float, help="MB (default: two chunks; also text -> video)"
    )
    chunks.add_argument("--repeats", type=int, help="repeated invocations after the first (default 20)")
    vlm = be.add_argument_group("vlm artifacts: the model at several budgets and precisions")
    vlm.add_argument("--budgets", help="budgets to compare, 1.0 = no reduction (default 1.0,0.5,0.2,0.1)")
    vlm.add_argument("--precisions", help="quantize modes to compare, e.g. none,int4 (default: the artifact's)")
    vlm.add_argument("--genai", help="also onnxruntime-genai's builder model of the LM: int4, fp32 or int4,fp32")
    vlm.add_argument("--max-new-tokens", type=int, help="fixed output length (default 16)")
    vlm.add_argument("--runs", type=int, help="interleaved rounds per budget (default 3)")
    video = be.add_argument_group("video-denoiser artifacts: TDTM + LPL vs plain")
    video.add_argument("--steps", type=int, help="sampling steps of the baseline (default 30)")
    video.add_argument("--merge-steps", type=int, help="TDTM steps of the candidate (default steps/2)")
    video.add_argument("--leap-at", type=int, help="leap step of the candidate (default steps/2)")
    video.add_argument("--step-repeats", type=int, help="repeats of the one-step timing (default 3)")
    video.add_argument("--decoder", type=Path, help="text -> video: also this video-decoder artifact, stage by stage")
    video.add_argument("--text-encoder", type=Path, help="text -> video: the text encoder of the first stage")
    load = be.add_argument_group("any ONNX artifact: portable graph loaded cold and cached vs pre-optimized")
    load.add_argument("--onnx-load", action="store_const", const=True, help="measure loading (takes --runs, --repeats)")
    be.set_defaults(func=cmd_bench)


def calibrate_parser(sub) -> None:
    ca = sub.add_parser("calibrate", help="find the smallest token budget that keeps the model's answers")
    ca.add_argument(
        "--model", help="VLM preset or LLaVA folder (--with-llm), or a vision encoder (default clip-vit-b16)"
    )
    ca.add_argument("--out", type=Path, required=True, help="folder for report.json, report.md, fidelity_vs_budget.png")
    ca.add_argument("--calib-images", type=Path, help="folder of calibration images (default: built-in set)")
    ca.add_argument("--calib-prompts", type=Path, help="VLM: calibration prompts, one a line (default: built-in)")
    ca.add_argument(
        "--target-fidelity", type=float, default=argparse.SUPPRESS, help="mean fidelity to keep, in (0, 1] (0.95)"
    )
    ca.add_argument("--metric", help="first-token (VLM default) | kl | greedy | cosine (vision encoders' only one)")
    ca.add_argument("--budgets", help="fractions 0.1,0.2,... or a range start:stop:step (default 0.05:1.0:0.05)")
    ca.add_argument("--alphas", help="HiRED full-view shares to try, e.g. 0.3,0.5 (default 0.5)")
    ca.add_argument(
        "--greedy-tokens", type=int, default=argparse.SUPPRESS, help="VLM: greedy tokens compared (default 8)"
    )
    ca.add_argument("--grid", help="AnyRes grid ROWSxCOLS (default 2x2; export with the same)")
    ca.add_argument("--image-size", type=int, help="side of each view in pixels (default: the model's)")
    ca.add_argument("--feature-layer", type=int, help="LLaVA-style hidden-state index for folders (CLIP -2)")
    ca.add_argument("--with-llm", action="store_true", help="a LLaVA folder: calibrate the whole VLM")
    ca.add_argument("--measure", action="store_true", help="VLM: export the choice to ONNX and time TTFT vs 100%%")
    ca.set_defaults(func=cmd_calibrate)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="edgetrim", description="Fixed-budget token reduction for on-device transformers")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    export_parser(sub)
    run_parser(sub)
    bench_parser(sub)
    calibrate_parser(sub)
    sub.add_parser("presets", help="list built-in presets").set_defaults(func=cmd_presets)
    return parser


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Library parameter name -> the flag that sets it (the long option; --no-validate for validate)."""
    names: dict[str, str] = {}
    actions = list(parser._actions)
    while actions:
        action = actions.pop()
        if isinstance(action, argparse._SubParsersAction):
            actions += [a for p in action.choices.values() for a in p._actions]
        elif action.option_strings and action.dest not in names:
            names[action.dest] = max(action.option_strings, key=len)
    names["fp16"] = "--fp16"
    return names


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        render.error(exc.render(flag_names(parser)))
        return EXIT_USER_ERROR
    except EdgetrimBug as exc:
        render.error(f"internal error (a bug in edgetrim, please report it): {exc}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        render.error("interrupted")
        return 130
    except Exception as exc:
        from edgetrim.export.validate import FidelityBelowGate, ValidationFailed  # raised by the exporter only

        if isinstance(exc, ValidationFailed):
            render.error(f"validation failed ({type(exc).__name__}): {exc.render(flag_names(parser))}")
            return EXIT_USER_ERROR if isinstance(exc, FidelityBelowGate) else EXIT_FAILURE  # gates: the user's call
        traceback.print_exc()
        render.error(f"internal error (a bug in edgetrim, please report it with the traceback above): {exc!r}")
        return EXIT_FAILURE


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
