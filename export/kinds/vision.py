"""``vision-encoder``: a ViT with HiRED's fixed-budget selection (+ projector) baked in.

Stages: the whole encoder as one chunk (``encoder``), or ``embed``, block groups ``blocks_AA-BB`` and
``head`` (``chunks`` / ``chunk_mb``). Pipeline ``vision``. Manifest sections ``reduction``,
``preprocessing``, ``outputs``. Checks: the pipeline on seeded random pixels and sample images
against the PyTorch module (tokens within atol, positions and budgets exact); quantized (int8) chunks
against fidelity gates on the calibration images instead.
"""

from __future__ import annotations

import numpy as np
import torch

from edgetrim.calib.report import calibration_record
from edgetrim.calib.samples import sample_images
from edgetrim.export.families.vision import VisionTower, load_tower
from edgetrim.export.kinds.base import Chunk, Plan, Quantization, quantization, single
from edgetrim.export.options import ExportOptions, precision
from edgetrim.export.reducers.budget import parse_budget, resolve_budget
from edgetrim.export.stages.base import block_groups, stage_examples
from edgetrim.export.stages.vision import INPUT_NAMES, OUTPUT_NAMES, BlockStage, ReducedVisionEncoder, ReductionPlan
from edgetrim.export.validate import Case, Check
from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.preprocess import preprocess

MAX_GRID = 6
LARGE_PARAMS = 50_000_000  # above this, one random and one sample input (each run costs seconds)
RULE = (
    "full view keeps F = clamp(int(K*alpha), K - C*N, N); cells share K - F in proportion to the "
    "full view's top int(N*(1-alpha)) early-layer tokens inside each cell's 2-D region, capped at N, "
    "largest-remainder rounding (ties to the lower cell); each partition keeps its top-budget tokens "
    "by the feature layer's score (ties to the lower index); kept tokens in original order"
)


def parse_grid(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"`grid` {text!r} is not ROWSxCOLS: pass e.g. 2x2, or 1x1 for a single view") from None
    if not (1 <= rows <= MAX_GRID and 1 <= cols <= MAX_GRID):
        raise UserError(f"`grid` {text} is outside 1x1..{MAX_GRID}x{MAX_GRID}: pass e.g. 2x2")
    return rows, cols


def reduction_plan(tower: VisionTower, opts: ExportOptions, kind: str) -> ReductionPlan:
    """The static HiRED plan from the options (checked before the model is converted)."""
    method, grid = opts.value("reduce", kind), parse_grid(opts.value("grid", kind))
    if method not in ("hired", "none"):
        raise UserError(f"`reduce` {method!r} is unknown: choose hired or none")
    budget = parse_budget(opts.value("budget", kind))
    size = opts.value("image_size", kind)
    if size is not None:
        if size <= 0:
            raise UserError(f"`image_size` {size} must be positive: pass a multiple of the patch size")
        tower.set_image_size(size)
    side = tower.side
    if grid[0] > side or grid[1] > side:
        raise UserError(
            f"`grid` {grid[0]}x{grid[1]} does not fit `image_size` {tower.image_size}: the full view is only "
            f"{side}x{side} patches, so a cell would cover no patch; use a grid of at most {side}x{side}"
        )
    partitions = 1 if grid == (1, 1) else 1 + grid[0] * grid[1]
    alpha = opts.value("alpha", kind)
    return ReductionPlan(method, grid, resolve_budget(1.0 if method == "none" else budget, partitions, side**2, alpha))


def apply_calibration(tower: VisionTower, opts: ExportOptions, kind: str) -> dict | None:
    """`budget` auto: the budget and alpha an edgetrim calibrate report chose replace it in ``opts`` (so
    ``export_options`` records what rebuilds the artifact); returns the manifest's ``calibration`` record.
    None for a budget given by number."""
    budget, report = opts.value("budget", kind), opts.value("calibration", kind)
    if budget != "auto":
        if report is not None:
            raise UserError("`calibration` goes with `budget` auto: pass `budget` auto, or drop `calibration`")
        return None
    if report is None:
        raise UserError(
            "`budget` auto needs `calibration` REPORT_DIR (written by edgetrim calibrate): pass it, or a budget "
            "such as 0.2"
        )
    if opts.alpha is not None:
        raise UserError("`alpha` comes from the calibration report with `budget` auto: drop `alpha`")
    grid = parse_grid(opts.value("grid", kind))
    size = opts.value("image_size", kind) or tower.image_size
    opts.budget, opts.alpha, record = calibration_record(report, tower.source.name, kind, grid, size)
    opts.calibration = None
    return record


def block_layout(tower: VisionTower, opts: ExportOptions, kind: str) -> list[tuple[int, int]] | None:
    """Block groups for `chunks` N (embed + N-2 block groups + head) or `chunk_mb` M; None: one chunk."""
    layers = len(tower.layers)
    chunks, chunk_mb = opts.value("chunks", kind), opts.value("chunk_mb", kind)
    if chunks is not None and chunk_mb is not None:
        raise UserError("`chunks` and `chunk_mb` both set: pass one of them")
    if chunks is not None:
        if not 3 <= chunks <= layers + 2:
            raise UserError(
                f"`chunks` {chunks} cannot split a {layers}-layer encoder: pass 3..{layers + 2} "
                "(embedding + block groups + head), or leave it out for one chunk"
            )
        return block_groups(layers, chunks - 2)
    if chunk_mb is not None:
        if chunk_mb <= 0:
            raise UserError(f"`chunk_mb` {chunk_mb} must be positive: e.g. 200")
        limit = chunk_mb * (1 << 20)
        groups, start, size = [], 0, 0
        for i, layer in enumerate(tower.layers):
            layer_bytes = sum(t.numel() * t.element_size() for t in layer.state_dict().values())
            if i > start and size + layer_bytes > limit:
                groups.append((start, i))
                start, size = i, 0
            size += layer_bytes
        return [*groups, (start, layers)]
    return None


def encoder_chunks(module: ReducedVisionEncoder, groups, quantize: str | None) -> list[Chunk]:
    """The whole encoder as one chunk, or one chunk per stage with example inputs from a reference run."""
    example = torch.zeros(1, module.plan.partitions, 3, module.tower.image_size, module.tower.image_size)
    if groups is None:
        return [single("encoder", module, (example,), quantize)]
    stages = list(module.stages)
    names = [
        f"blocks_{s.start:02d}-{s.stop - 1:02d}" if isinstance(s, BlockStage) else "embed" if i == 0 else "head"
        for i, s in enumerate(stages)
    ]
    examples = stage_examples(stages, {INPUT_NAMES[0]: example})
    return [single(n, s, x, quantize) for n, s, x in zip(names, stages, examples, strict=True)]


def sections(module: ReducedVisionEncoder, requested: str, llm: bool) -> dict:
    """``reduction``, ``preprocessing`` and ``outputs``."""
    plan, tower = module.plan, module.tower
    b = plan.budget
    available = b.partitions * b.tokens_per_partition
    reduction = {
        "method": plan.method,
        "requested_budget": requested if plan.method == "hired" else "1.0",
        "tokens": b.total,
        "available_tokens": available,
        "kept_fraction": b.total / available,
        "budget": b.to_dict(),
        "early_layer": plan.early_layer,
        "feature_layer": len(tower.layers) - 1,
        "score": "cls_attention" if tower.has_cls else "received_attention",
        "rule": RULE,
    }
    preprocessing = {
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
    where = "vision pipeline: " if llm else ""
    space = " in the LLM's embedding space" if llm else " after the multi-modal projector" if tower.projector else ""
    outputs = {
        contract.TOKENS: f"{where}[1, K, D] visual tokens{space}",
        contract.POSITIONS: f"{where}[1, K] flat index p*N + row*n + col (p: 0 full view, 1.. cells row-major), "
        "ascending",
        contract.PARTITION_BUDGETS: f"{where}[1, P] tokens kept per partition, summing to K",
    }
    if llm:
        outputs[contract.LOGITS] = "prefill / decode pipelines: [1, V] next-token logits"
    return {"reduction": reduction, "preprocessing": preprocessing, "outputs": outputs}


def reference_cases(module: ReducedVisionEncoder, inputs: list[tuple[str, np.ndarray]]) -> list[Case]:
    """Each (name, pixel_values) with the PyTorch module's outputs."""
    cases = []
    for name, x in inputs:
        with torch.no_grad():
            outs = module(torch.from_numpy(x))
        expected = {n: o.numpy() for n, o in zip(OUTPUT_NAMES, outs, strict=True)}
        cases.append(Case(name, {contract.PIXEL_VALUES: x}, expected))
    return cases


def validation_cases(module: ReducedVisionEncoder) -> list[Case]:
    """Seeded random pixels and sample images, with the PyTorch module's outputs."""
    tower, plan = module.tower, module.plan
    count = 2 if sum(p.numel() for p in module.parameters()) < LARGE_PARAMS else 1
    s = tower.image_size
    mean, std = np.asarray(tower.mean, np.float32), np.asarray(tower.std, np.float32)
    rng = np.random.default_rng(1234)
    inputs = []
    for i in range(count):
        pixels = rng.uniform(0, 1, (1, plan.partitions, s, s, 3)).astype(np.float32)
        inputs.append((f"random-{i}", ((pixels - mean) / std).transpose(0, 1, 4, 2, 3).copy()))
    for i, img in enumerate(sample_images(count)):
        inputs.append((f"sample-{i}", preprocess(img, s, plan.grid, tower.mean, tower.std)))
    return reference_cases(module, inputs)


def vision_check(module: ReducedVisionEncoder, quant: Quantization) -> Check:
    """Parity on validation inputs; quantized: the fidelity gates on every calibration image."""
    if not quant.on:
        return Check(contract.VISION, validation_cases(module))
    tower, calib = module.tower, quant.calibration
    inputs = [
        (name, preprocess(img, tower.image_size, module.plan.grid, tower.mean, tower.std))
        for name, img in zip(calib.image_names, calib.images, strict=True)
    ]
    return Check(contract.VISION, reference_cases(module, inputs), fidelity=quant.vision_gate)


def build_encoder(
    tower: VisionTower, opts: ExportOptions, kind: str, quant: Quantization
) -> tuple[ReducedVisionEncoder, list[Chunk]]:
    """The reduced encoder module (the reference) and its chunks (int8 when quantized, whatever the mode)."""
    plan = reduction_plan(tower, opts, kind)
    groups = block_layout(tower, opts, kind)
    module = ReducedVisionEncoder(tower, plan, groups).eval()
    return module, encoder_chunks(module, groups, "int8" if quant.on else None)


def summary(module: ReducedVisionEncoder) -> dict:
    b = module.plan.budget
    available = b.partitions * b.tokens_per_partition
    return {
        "tokens": b.total,
        "available_tokens": available,
        "kept_fraction": b.total / available,
        "partitions": b.partitions,
    }


def plan(opts: ExportOptions, scratch) -> Plan:
    kind = contract.VISION_ENCODER
    tower = load_tower(opts.model_spec, opts.value("feature_layer", kind))
    calibration = apply_calibration(tower, opts, kind)
    quant = quantization(opts, kind, ("int8",), tower.source.random_weights)
    module, chunks = build_encoder(tower, opts, kind, quant)
    return Plan(
        kind=kind,
        source=tower.source,
        precision=precision(opts.target, opts.fp16),
        chunks=chunks,
        pipelines={contract.VISION: [c.name for c in chunks]},
        sections=sections(module, str(opts.value("budget", kind)), llm=False)
        | ({"calibration": calibration} if calibration else {}),
        checks=lambda root: [vision_check(module, quant)],
        summary=summary(module)
        | {"quantization": quant.describe()}
        | ({"calibration": calibration} if calibration else {}),
        source_extra={"has_projector": tower.projector is not None, "token_dim": tower.output_size},
    )
