"""``edgetrim export``: model -> adapter -> reduced graph -> target artifact -> validation -> manifest."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from edgetrim.calib.budgets import parse_budget, resolve_budget
from edgetrim.export.artifact import check_out_dir, file_entry, staging, write_json
from edgetrim.export.graph import INPUT_NAMES, BlockStage, ReducedVisionEncoder, ReductionPlan, Stage, block_groups
from edgetrim.export.loading import load_tower
from edgetrim.export.validate import Validation, validate_coreml, validate_runtime
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import MANIFEST, SCHEMA_VERSION

TARGETS = ("onnx", "coreml", "executorch")
SUFFIX = {"onnx": ".onnx", "executorch": ".pte", "coreml": ".mlpackage"}
MAX_GRID = 6
VERSION = "0.1.0"


@dataclass
class ExportOptions:
    target: str
    model: str | None = None
    reduce: str = "hired"
    budget: str = "0.2"
    alpha: float = 0.5
    grid: str = "2x2"
    image_size: int | None = None
    out: Path | None = None
    atol: float = 1e-4
    fp16: bool | None = None  # None: the target's default (fp16 for CoreML, fp32 elsewhere)
    validate: bool = True
    feature_layer: int | None = None
    chunks: int | None = None  # total chunks: embedding, block groups, head
    chunk_mb: float | None = None  # or: block groups of at most this many MB


def parse_grid(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--grid {text!r} is not ROWSxCOLS: pass e.g. 2x2, or 1x1 for a single view") from None
    if not (1 <= rows <= MAX_GRID and 1 <= cols <= MAX_GRID):
        raise UserError(f"--grid {text} is outside 1x1..{MAX_GRID}x{MAX_GRID}: pass e.g. 2x2")
    return rows, cols


def precision_for(target: str, fp16: bool | None) -> str:
    if fp16 and target != "coreml":
        raise UserError(f"--fp16 is supported for --target coreml only; {target} artifacts are fp32: drop --fp16")
    return "fp16" if (target == "coreml" and fp16 is not False) else "fp32"


def check_options(opts: ExportOptions) -> tuple[tuple[int, int], str, float | int]:
    if opts.target not in TARGETS:
        raise UserError(f"--target {opts.target!r} is unknown: choose one of {', '.join(TARGETS)}")
    if opts.reduce not in ("hired", "none"):
        raise UserError(f"--reduce {opts.reduce!r} is unknown: choose hired or none")
    if opts.atol <= 0:
        raise UserError(f"--atol {opts.atol} must be positive: e.g. 1e-4")
    if opts.image_size is not None and opts.image_size <= 0:
        raise UserError(f"--image-size {opts.image_size} must be positive: pass a multiple of the patch size")
    return parse_grid(opts.grid), precision_for(opts.target, opts.fp16), parse_budget(opts.budget)


def build_plan(tower, opts: ExportOptions, grid: tuple[int, int], budget: float | int) -> ReductionPlan:
    if opts.image_size is not None:
        tower.set_image_size(opts.image_size)
    side = tower.side
    if grid[0] > side or grid[1] > side:
        raise UserError(
            f"--grid {grid[0]}x{grid[1]} does not fit --image-size {tower.image_size}: the full view is only "
            f"{side}x{side} patches, so a cell would cover no patch; use a grid of at most {side}x{side}"
        )
    partitions = 1 if grid == (1, 1) else 1 + grid[0] * grid[1]
    if opts.reduce == "none":
        budget = 1.0
    return ReductionPlan(opts.reduce, grid, resolve_budget(budget, partitions, side * side, opts.alpha))


def reduction_manifest(module: ReducedVisionEncoder, requested: str) -> dict:
    plan, tower = module.plan, module.tower
    b = plan.budget
    available = b.partitions * b.tokens_per_partition
    return {
        "method": plan.method,
        "requested_budget": requested if plan.method == "hired" else "1.0",
        "tokens": b.total,
        "available_tokens": available,
        "kept_fraction": b.total / available,
        "budget": b.to_dict(),
        "early_layer": plan.early_layer,
        "feature_layer": len(tower.layers) - 1,
        "score": "cls_attention" if tower.has_cls else "received_attention",
        "rule": (
            "full view keeps F = clamp(int(K*alpha), K - C*N, N); cells share K - F in proportion to the "
            "full view's top int(N*(1-alpha)) early-layer tokens inside each cell's 2-D region, capped at N, "
            "largest-remainder rounding (ties to the lower cell); each partition keeps its top-budget tokens "
            "by the feature layer's score (ties to the lower index); kept tokens in original order"
        ),
    }


def preprocessing_manifest(module: ReducedVisionEncoder) -> dict:
    tower, plan = module.tower, module.plan
    return {
        "image_size": tower.image_size,
        "patch_size": tower.patch_size,
        "patches_per_side": tower.side,
        "grid": list(plan.grid),
        "partitions": plan.partitions,
        "mean": list(tower.mean),
        "std": list(tower.std),
        "resize": "full view: bicubic squash to SxS; cells: bicubic fit into (rows*S)x(cols*S), black pad, centred",
        "layout": "pixel_values float32 [1, P, 3, S, S], full view first, cells row-major, RGB in [0,1] normalized",
    }


@dataclass
class ChunkExport:
    """One stage as exported: its module, example inputs and file stem."""

    name: str
    stage: Stage
    example: tuple[torch.Tensor, ...]


def chunk_layout(tower, opts: ExportOptions) -> list[tuple[int, int]] | None:
    """Block groups for --chunks N (N total: embed + N-2 block groups + head) or --chunk-mb M; None: one chunk."""
    layers = len(tower.layers)
    if opts.chunks is not None and opts.chunk_mb is not None:
        raise UserError("--chunks and --chunk-mb both set: pass one of them")
    if opts.chunks is not None:
        if not 3 <= opts.chunks <= layers + 2:
            raise UserError(
                f"--chunks {opts.chunks} cannot split a {layers}-layer encoder: pass 3..{layers + 2} "
                "(embedding + block groups + head), or leave it out for one chunk"
            )
        return block_groups(layers, opts.chunks - 2)
    if opts.chunk_mb is not None:
        if opts.chunk_mb <= 0:
            raise UserError(f"--chunk-mb {opts.chunk_mb} must be positive: e.g. 200")
        limit = opts.chunk_mb * (1 << 20)
        groups, start, size = [], 0, 0
        for i, layer in enumerate(tower.layers):
            layer_bytes = sum(t.numel() * t.element_size() for t in layer.state_dict().values())
            if i > start and size + layer_bytes > limit:
                groups.append((start, i))
                start, size = i, 0
            size += layer_bytes
        return [*groups, (start, layers)]
    return None


def chunk_exports(module: ReducedVisionEncoder, groups, example: torch.Tensor) -> list[ChunkExport]:
    """The whole encoder as one chunk, or one chunk per stage with example inputs from a reference run."""
    if groups is None:
        return [ChunkExport("encoder", module, (example,))]
    env = {INPUT_NAMES[0]: example}
    out = []
    with torch.no_grad():
        for stage in module.stages:
            inputs = tuple(env[n].contiguous() for n in stage.input_names)  # CoreML needs contiguous inputs
            if isinstance(stage, BlockStage):
                name = f"blocks_{stage.start:02d}-{stage.stop - 1:02d}"
            else:
                name = "embed" if stage.input_names == INPUT_NAMES else "head"
            out.append(ChunkExport(name, stage, inputs))
            result = stage(*inputs)
            env.update(zip(stage.output_names, result if isinstance(result, tuple) else (result,), strict=True))
    return out


def io_spec(chunk: ChunkExport, target: str) -> tuple[list, list]:
    """Chunk inputs/outputs as the artifact exposes them (CoreML has no int64: its ints are int32)."""
    with torch.no_grad():
        outs = chunk.stage(*chunk.example)
    outs = outs if isinstance(outs, tuple) else (outs,)
    int_dtype = "int32" if target == "coreml" else "int64"

    def spec(name: str, t: torch.Tensor) -> dict:
        return {"name": name, "shape": list(t.shape), "dtype": "float32" if t.is_floating_point() else int_dtype}

    inputs = [spec(n, t) for n, t in zip(chunk.stage.input_names, chunk.example, strict=True)]
    return inputs, [spec(n, t) for n, t in zip(chunk.stage.output_names, outs, strict=True)]


def write_chunk(
    target: str, chunk: ChunkExport, path: Path, fp16: bool, chunked: bool, int8: bool = False
) -> list[tuple[Path, str]]:
    """Export one chunk; returns (file, role) pairs. ``int8``: ONNX only, dynamic int8 weight MatMuls."""
    names = (chunk.stage.input_names, chunk.stage.output_names)
    if target == "onnx":
        from edgetrim.export.targets.onnx import export_onnx, optimize_for_runtime, quantize_int8_dynamic

        export_onnx(chunk.stage, chunk.example, path, *names, external_data=True if chunked else None)
        files = optimize_for_runtime(path)
        if int8:
            files = quantize_int8_dynamic(path)
    elif target == "executorch":
        from edgetrim.export.targets.executorch import export_executorch

        files = export_executorch(chunk.stage, chunk.example, path)
    else:
        from edgetrim.export.targets.coreml import export_coreml

        export_coreml(chunk.stage, chunk.example, path, *names, fp16)
        files = [path]
    return [(f, "program" if i == 0 else "external_data") for i, f in enumerate(files)]


def default_out(opts: ExportOptions, source_name: str) -> Path:
    stem = Path(source_name).name if source_name else "model"
    return Path("artifacts") / f"{stem}-{opts.reduce}-{opts.target}"


def export_artifact(opts: ExportOptions, step=lambda name: None) -> dict:
    """Run the whole export; ``step(name)`` is called as each stage starts. Returns the report."""
    grid, precision, budget = check_options(opts)
    if opts.out:
        check_out_dir(Path(opts.out))  # refuse a foreign --out before loading the model, not after
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 3)
        t = now

    step("load model")
    tower = load_tower(opts.model, opts.feature_layer)
    out = Path(opts.out) if opts.out else default_out(opts, tower.source.name)
    plan = build_plan(tower, opts, grid, budget)
    groups = chunk_layout(tower, opts)
    module = ReducedVisionEncoder(tower, plan, groups).eval()
    example = torch.zeros(1, plan.partitions, 3, tower.image_size, tower.image_size)
    chunks = chunk_exports(module, groups, example)
    lap("load_s")
    with staging(out) as tmp:
        entries = []
        for i, chunk in enumerate(chunks):
            step(f"export {opts.target} ({precision}) chunk {i + 1}/{len(chunks)}: {chunk.name}")
            stem = "model" if len(chunks) == 1 else f"{i:02d}-{chunk.name}"
            path = tmp / f"{stem}{SUFFIX[opts.target]}"
            files = write_chunk(opts.target, chunk, path, precision == "fp16", groups is not None)
            inputs, outputs = io_spec(chunk, opts.target)
            entry = {"name": chunk.name, "files": [file_entry(tmp, f, role) for f, role in files]}
            entry.update(inputs=inputs, outputs=outputs)
            if opts.target == "onnx":
                entry["optimized"] = "ort-extended"
            entries.append(entry)
        lap("export_s")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "edgetrim_version": VERSION,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "kind": "vision-encoder",
            "target": opts.target,
            "precision": precision,
            "source": {
                "kind": tower.source.kind,
                "name": tower.source.name,
                "architecture": tower.source.architecture,
                "random_weights": tower.source.random_weights,
                "config": tower.source.config,
                "has_projector": tower.projector is not None,
                "token_dim": tower.output_size,
            },
            "reduction": reduction_manifest(module, str(opts.budget)),
            "preprocessing": preprocessing_manifest(module),
            "outputs": {
                "tokens": "[1, K, D] visual tokens" + (" after the multi-modal projector" if tower.projector else ""),
                "positions": "[1, K] flat index p*N + row*n + col (p: 0 full view, 1.. cells row-major), ascending",
                "partition_budgets": "[1, P] tokens kept per partition, summing to K",
            },
            "chunks": entries,
        }
        write_json(tmp / MANIFEST, manifest)
        step("validate")
        if not opts.validate:
            validation = Validation("skipped", None, opts.atol, note="--no-validate")
        elif opts.target == "coreml":
            validation = validate_coreml(tmp, module, opts.atol, precision == "fp16")
        else:
            validation = validate_runtime(tmp, module, opts.atol)
        lap("validate_s")
        report = {
            "artifact": str(out),
            "target": opts.target,
            "precision": precision,
            "model": tower.source.name,
            "random_weights": tower.source.random_weights,
            "tokens": plan.budget.total,
            "available_tokens": plan.budget.partitions * plan.budget.tokens_per_partition,
            "kept_fraction": manifest["reduction"]["kept_fraction"],
            "partitions": plan.partitions,
            "chunks": [{"name": e["name"], "bytes": sum(f["bytes"] for f in e["files"])} for e in entries],
            "artifact_bytes": sum(f["bytes"] for e in entries for f in e["files"]),
            "validation": validation.to_dict(),
            "timings_s": timings,
        }
        write_json(tmp / "report.json", report)
    return report
