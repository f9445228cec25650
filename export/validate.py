"""Parity of an exported artifact against the PyTorch reduced module it came from.

ONNX / ExecuTorch: run through ``edgetrim.runtime`` on seeded random pixels and sample images;
tokens within ``atol``, kept positions and partition budgets identical, K exact, positions
ascending. CoreML on Linux: spec check only (names, static shapes, dtypes, ops); numbers need macOS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgetrim.calib.samples import sample_images
from edgetrim.export.graph import OUTPUT_NAMES, ReducedVisionEncoder
from edgetrim.export.targets import coreml
from edgetrim.runtime.chunks import ChunkLoader
from edgetrim.runtime.manifest import open_artifact, read_manifest
from edgetrim.runtime.preprocess import preprocess

LARGE_PARAMS = 50_000_000  # above this, one random and one sample input (each run costs seconds)


class ValidationFailed(Exception):
    """The artifact does not match the PyTorch reference; the message says how."""


@dataclass
class Validation:
    status: str  # passed | spec-only
    max_abs_error: float | None
    atol: float
    cases: list[dict] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def validation_inputs(module: ReducedVisionEncoder, randoms: int = 2, samples: int = 2) -> list[tuple[str, np.ndarray]]:
    tower, plan = module.tower, module.plan
    s = tower.image_size
    mean, std = np.asarray(tower.mean, np.float32), np.asarray(tower.std, np.float32)
    rng = np.random.default_rng(1234)
    cases = []
    for i in range(randoms):
        pixels = rng.uniform(0, 1, (1, plan.partitions, s, s, 3)).astype(np.float32)
        cases.append((f"random-{i}", ((pixels - mean) / std).transpose(0, 1, 4, 2, 3).copy()))
    for i, img in enumerate(sample_images(samples)):
        cases.append((f"sample-{i}", preprocess(img, s, plan.grid, tower.mean, tower.std)))
    return cases


def reference_outputs(module: ReducedVisionEncoder, x: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        outs = module(torch.from_numpy(x))
    return {name: o.numpy() for name, o in zip(OUTPUT_NAMES, outs, strict=True)}


def compare(name: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray], k: int, atol: float) -> dict:
    pos, budgets = got["positions"].astype(np.int64), got["partition_budgets"].astype(np.int64)
    err = float(np.abs(got["tokens"].astype(np.float64) - ref["tokens"]).max())
    case = {
        "case": name,
        "max_abs_error": err,
        "tokens_shape": list(got["tokens"].shape),
        "k_exact": bool(got["tokens"].shape[1] == k and pos.shape[1] == k and int(budgets.sum()) == k),
        "positions_ascending": bool((np.diff(pos, axis=1) > 0).all()),
        "positions_match": bool(np.array_equal(pos, ref["positions"])),
        "budgets_match": bool(np.array_equal(budgets, ref["partition_budgets"])),
        "mismatched_positions": int((pos != ref["positions"]).sum()),
    }
    case["passed"] = bool(
        err <= atol
        and case["k_exact"]
        and case["positions_ascending"]
        and case["positions_match"]
        and case["budgets_match"]
    )
    return case


def validate_runtime(root: Path, module: ReducedVisionEncoder, atol: float, pipeline: str | None = None) -> Validation:
    """Run the staged artifact (every chunk of ``pipeline``, through the runtime's chunk loader) against PyTorch."""
    k = module.plan.budget.total
    target = read_manifest(root).target
    count = 2 if sum(p.numel() for p in module.parameters()) < LARGE_PARAMS else 1
    cases = []
    with ChunkLoader(open_artifact(root), pipeline=pipeline) as loader:
        for name, x in validation_inputs(module, randoms=count, samples=count):
            cases.append(compare(name, loader.run({"pixel_values": x}), reference_outputs(module, x), k, atol))
    result = Validation("passed", max(c["max_abs_error"] for c in cases), atol, cases)
    failed = [c for c in cases if not c["passed"]]
    if failed:
        c = failed[0]
        raise ValidationFailed(
            f"{target} artifact differs from PyTorch on {c['case']}: max abs error {c['max_abs_error']:.2e} "
            f"(atol {atol:g}), {c['mismatched_positions']} kept positions differ, budgets match: {c['budgets_match']} "
            "- raise --atol if only the error is over, otherwise report an edgetrim bug"
        )
    return result


def validate_coreml(
    root: Path, module: ReducedVisionEncoder, atol: float, fp16: bool, pipeline: str | None = None
) -> Validation:
    """Every chunk's saved spec against the manifest's I/O (static shapes, names, dtypes); on macOS, predict
    through the chunks of ``pipeline`` (the vision pipeline of a vlm)."""
    artifact = read_manifest(root)
    problems, cases = [], []
    for chunk in artifact.chunks:
        spec = coreml.coreml_spec_summary(artifact.file(chunk, "program"))
        want_in = {i["name"]: i["shape"] for i in chunk["inputs"]}
        want_out = {o["name"]: o["shape"] for o in chunk["outputs"]}
        got_in = {i["name"]: i["shape"] for i in spec["inputs"]}
        got_out = {o["name"]: o["shape"] for o in spec["outputs"]}
        if got_in != want_in:
            problems.append(f"{chunk['name']}: inputs {got_in}, expected {want_in}")
        if got_out != want_out:
            problems.append(f"{chunk['name']}: outputs {got_out}, expected {want_out}")
        forbidden = sorted(op for op in spec["ops"] if op in ("argsort", "sort"))
        if forbidden:
            problems.append(f"{chunk['name']}: uses {forbidden}")
        cases.append({"case": f"spec:{chunk['name']}", **spec, "passed": not problems})
    if problems:
        raise ValidationFailed(f"CoreML spec check failed: {'; '.join(problems)} - report an edgetrim bug")
    if not coreml.coreml_can_predict():
        return Validation(
            "spec-only",
            None,
            atol,
            cases,
            "CoreML prediction needs macOS: spec checked (names, static shapes, dtypes, ops); "
            "numeric parity not run on this machine",
        )
    tol = max(atol, 5e-2) if fp16 else atol
    k = module.plan.budget.total
    for name, x in validation_inputs(module):
        env = {"pixel_values": x}
        for chunk in artifact.pipeline(pipeline):
            feeds = {i["name"]: env[i["name"]] for i in chunk["inputs"]}
            env.update(coreml.coreml_predict(artifact.file(chunk, "program"), feeds))
        cases.append(compare(name, env, reference_outputs(module, x), k, tol))
    failed = [c for c in cases if not c["passed"]]
    if failed:
        raise ValidationFailed(f"CoreML artifact differs from PyTorch on {failed[0]['case']}: {failed[0]}")
    return Validation("passed", max(c.get("max_abs_error", 0.0) for c in cases), tol, cases)
