"""``edgetrim-jetson``: edgetrim ONNX artifacts on a Jetson, TensorRT -> CUDA -> CPU, torch-free.

    edgetrim-jetson info
    edgetrim-jetson warmup ARTIFACT              # builds every TensorRT engine once (minutes on an Orin)
    edgetrim-jetson bench ARTIFACT [--repeats N] [--out DIR]
    edgetrim-jetson vision ARTIFACT IMAGE [--overlay PNG]
    edgetrim-jetson vlm ARTIFACT IMAGE --prompt TEXT [--max-new-tokens N]

Every command prints the providers ONNX Runtime actually chose; ``--require-gpu`` refuses a silent
fallback to the CPU. Device options: ``--device {tensorrt,cuda,cpu} --device-id N --gpu-mem-limit MB
--no-fp16 --cache DIR``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgetrim.runtime import contract
from edgetrim.runtime.chunks import example_feeds, open_chunk
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import open_artifact
from edgetrim_jetson import providers as gpu

FLAGS = {"require_gpu": "--require-gpu", "device": "--device", "memory_budget_mb": "--memory-budget",
         "overlay": "--overlay"}
console = Console(soft_wrap=True)  # facts stay on one line (tables still fit the terminal)
err = Console(stderr=True)


def settings_of(args: argparse.Namespace) -> gpu.GpuSettings:
    return gpu.GpuSettings(args.device, args.device_id, args.gpu_mem_limit, not args.no_fp16, cache_dir=args.cache)


def engines(settings: gpu.GpuSettings, sha: str) -> int:
    """TensorRT engine files cached for one program."""
    folder = gpu.engine_folder(settings, sha)
    return len(list(folder.glob("*.engine"))) if folder.exists() else 0


def measure_programs(root: Path, settings: gpu.GpuSettings, require_gpu: bool, repeats: int) -> dict:
    """Every program of the artifact on the provider chain: load, first run, steady-state run."""
    artifact = open_artifact(root)
    if artifact.target != contract.ONNX:
        raise UserError(f"{root} is a {artifact.target} artifact: the Jetson app runs ONNX ones (export --target onnx)")
    gpu.check_available(settings, require_gpu)
    rows = {}
    for label, chunk, function, _, sha in artifact.programs():
        before = engines(settings, sha)
        t0 = time.perf_counter()
        backend = open_chunk(artifact, chunk, function, gpu.per_program(settings))
        load_ms = (time.perf_counter() - t0) * 1e3
        gpu.check_chosen({label: backend.providers}, require_gpu)
        feeds = example_feeds(chunk)
        t0 = time.perf_counter()
        backend.run(feeds)
        first_ms = (time.perf_counter() - t0) * 1e3
        steady = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            backend.run(feeds)
            steady.append((time.perf_counter() - t0) * 1e3)
        rows[label] = {
            "providers": backend.providers,
            "load_ms": load_ms,
            "first_run_ms": first_ms,
            "steady_run_ms": statistics.median(steady) if steady else None,
            "engines_built": engines(settings, sha) - before,
            "onnx_cache": backend.cache,
        }
        del backend
    return {"artifact": str(root), "settings": gpu.describe(settings), "repeats": repeats, "programs": rows,
            "random_weights": artifact.random_weights}


def show_programs(report: dict, title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("program", no_wrap=True)
    for col in ("provider", "load ms", "first run ms", "steady ms", "engines built"):
        table.add_column(col, justify="right")
    for label, r in report["programs"].items():
        steady = "-" if r["steady_run_ms"] is None else f"{r['steady_run_ms']:.2f}"
        provider = r["providers"][0].removesuffix("ExecutionProvider")
        table.add_row(label, provider, f"{r['load_ms']:.0f}", f"{r['first_run_ms']:.1f}", steady,
                      str(r["engines_built"]))
    console.print(table)
    chosen = sorted({p for r in report["programs"].values() for p in r["providers"]})
    console.print(f"providers ONNX Runtime chose: {', '.join(chosen)}")
    if report["random_weights"]:
        console.print("weights: random (seeded preset); timings are those of the real shapes")


def cmd_info(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    settings = settings_of(args)
    for key, value in gpu.describe(settings).items():
        console.print(f"{key:>17}: {value}")
    console.print(f"{'available':>17}: {', '.join(ort.get_available_providers())}")
    console.print(f"{'chain':>17}: {', '.join(gpu.check_available(settings, args.require_gpu))}")
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    report = measure_programs(args.artifact, settings_of(args), args.require_gpu, repeats=0)
    show_programs(report, f"warmup {args.artifact}: every program loaded and run once")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    report = measure_programs(args.artifact, settings_of(args), args.require_gpu, args.repeats)
    out = args.out or args.artifact / "jetson"
    out.mkdir(parents=True, exist_ok=True)
    (out / "jetson-bench.json").write_text(json.dumps(report, indent=1))
    show_programs(report, f"bench {args.artifact} (steady state: median of {args.repeats})")
    console.print(f"wrote {out / 'jetson-bench.json'}")
    return 0


def cmd_vision(args: argparse.Namespace) -> int:
    from edgetrim.runtime.overlay import kept_overlay
    from edgetrim.runtime.preprocess import load_image
    from edgetrim.runtime.vision import VisionEncoder

    settings = settings_of(args)
    gpu.check_available(settings, args.require_gpu)
    image = load_image(args.image)
    encoder = VisionEncoder(args.artifact, providers=gpu.per_program(settings), memory_budget_mb=args.memory_budget)
    gpu.check_chosen({"vision": encoder.loader.active_providers()}, args.require_gpu)
    result = encoder.encode(image)
    times = []
    for _ in range(args.repeats):
        times.append(encoder.encode(image).timings_ms["inference_ms"])
    console.print(f"providers ONNX Runtime chose: {', '.join(encoder.loader.active_providers())}")
    console.print(f"K = {result.positions.shape[1]}, tokens {list(result.tokens.shape)}, "
                  f"per partition {result.partition_budgets[0].tolist()}")
    if times:
        console.print(f"latency: median {statistics.median(times):.1f} ms over {len(times)} runs")
    if args.overlay:
        if args.overlay.suffix.lower() != ".png":
            raise UserError(f"`overlay` {args.overlay} must end in .png: e.g. kept.png")
        pp = encoder.preprocessing
        scale = max(1, 224 // pp["image_size"])
        kept_overlay(encoder.views(image), result.positions[0], pp["patches_per_side"], args.overlay, scale)
        console.print(f"wrote {args.overlay}")
    encoder.loader.close()
    return 0


def cmd_vlm(args: argparse.Namespace) -> int:
    from edgetrim.runtime.vlm import VlmPipeline

    settings = settings_of(args)
    gpu.check_available(settings, args.require_gpu)
    pipeline = VlmPipeline(args.artifact, args.memory_budget, providers=gpu.per_program(settings))
    try:
        chosen = {"vision": pipeline.vision.active_providers(), "language model": pipeline.lm.active_providers()}
        gpu.check_chosen(chosen, args.require_gpu)
        result = pipeline.generate(args.image, args.prompt, args.max_new_tokens, on_text=lambda t: print(t, end=""))
    finally:
        pipeline.close()
    print()
    t = result.timings_ms
    console.print(f"providers ONNX Runtime chose: vision {', '.join(chosen['vision'])}; "
                  f"language model {', '.join(chosen['language model'])}")
    console.print(f"K = {result.visual_tokens}, TTFT {t['ttft_ms']:.0f} ms (vision {t['vision_ms']:.0f}, prefill "
                  f"{t['prefill_ms']:.0f}), decode {result.generation.decode_tokens_per_s:.1f} tok/s")
    if pipeline.artifact.random_weights:
        console.print("weights: random (seeded preset): the text is meaningless")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgetrim-jetson", description=__doc__.splitlines()[0])
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", choices=list(gpu.DEVICES), default="tensorrt", help="first provider tried")
    device.add_argument("--device-id", type=int, default=0, help="CUDA device (default 0)")
    device.add_argument("--gpu-mem-limit", type=int, help="CUDA arena limit, MB (default: none)")
    device.add_argument("--no-fp16", action="store_true", help="TensorRT in fp32 only")
    device.add_argument("--cache", type=Path, help="engine and timing caches (default: <edgetrim cache>/jetson)")
    device.add_argument("--require-gpu", action="store_true", help="refuse to run on the CPU provider")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", parents=[device], help="ONNX Runtime, providers, settings").set_defaults(func=cmd_info)
    warm = sub.add_parser("warmup", parents=[device], help="build every engine once")
    warm.add_argument("artifact", type=Path)
    warm.set_defaults(func=cmd_warmup)
    bench = sub.add_parser("bench", parents=[device], help="per-program load, first run, steady state")
    bench.add_argument("artifact", type=Path)
    bench.add_argument("--repeats", type=int, default=20)
    bench.add_argument("--out", type=Path, help="folder for jetson-bench.json (default ARTIFACT/jetson)")
    bench.set_defaults(func=cmd_bench)
    vision = sub.add_parser("vision", parents=[device], help="encode an image with a vision-encoder artifact")
    vision.add_argument("artifact", type=Path)
    vision.add_argument("image", type=Path)
    vision.add_argument("--overlay", type=Path, help="kept-token overlay PNG")
    vision.add_argument("--repeats", type=int, default=10)
    vision.add_argument("--memory-budget", type=float, help="MB: stream chunks beyond it")
    vision.set_defaults(func=cmd_vision)
    vlm = sub.add_parser("vlm", parents=[device], help="answer a prompt about an image with a vlm artifact")
    vlm.add_argument("artifact", type=Path)
    vlm.add_argument("image", type=Path)
    vlm.add_argument("--prompt", default="Describe the image.")
    vlm.add_argument("--max-new-tokens", type=int, default=32)
    vlm.add_argument("--memory-budget", type=float, help="MB: stream chunks beyond it")
    vlm.set_defaults(func=cmd_vlm)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        err.print(f"error: {exc.render(FLAGS)}", highlight=False, soft_wrap=True, markup=False)
        return 2


def entry() -> None:
    sys.exit(main())
