"""Parity of an exported artifact against the PyTorch reduced module it came from.

ONNX / ExecuTorch: run through ``edgetrim.runtime`` on seeded random pixels and sample images;
tokens within ``atol``, kept positions and partition budgets identical, K exact, positions
ascending. An int8 vision artifact is held to fidelity instead (``int8_fidelity``): K exact, most
kept positions shared with the fp32 selection, the shared tokens nearly parallel. CoreML on Linux:
spec check only (names, static shapes, dtypes, ops); numbers need macOS.
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
INT8_MIN_OVERLAP = 0.9  # share of the K kept positions an int8 encoder must keep in common with fp32
INT8_MIN_COSINE = 0.99  # cosine of every shared visual token, int8 vs fp32


class ValidationFailed(Exception):
    """The artifact does not match the PyTorch reference; the message says how."""


@dataclass
class Validation:
    status: str  # passed | fidelity (int8: see int8_fidelity) | spec-only
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


def int8_fidelity(name: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray], k: int) -> dict:
    """An int8 encoder's outputs [1, K, ...] vs the fp32 reference: K exact, share of kept positions in
    common (``kept_overlap``), smallest cosine between the tokens of a shared position."""
    pos, ref_pos = got["positions"][0].astype(np.int64), ref["positions"][0]
    common, i, j = np.intersect1d(pos, ref_pos, return_indices=True)
    a, b = got["tokens"][0][i].astype(np.float64), ref["tokens"][0][j].astype(np.float64)
    cosine = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
    case = {
        "case": name,
        "k_exact": bool(got["tokens"].shape[1] == k and pos.size == k and int(got["partition_budgets"].sum()) == k),
        "positions_ascending": bool((np.diff(pos) > 0).all()),
        "kept_overlap": len(common) / k,
        "min_token_cosine": float(cosine.min()) if len(common) else 0.0,
        "budgets_match": bool(np.array_equal(got["partition_budgets"], ref["partition_budgets"])),
    }
    case["passed"] = bool(
        case["k_exact"]
        and case["positions_ascending"]
        and case["kept_overlap"] >= INT8_MIN_OVERLAP
        and case["min_token_cosine"] >= INT8_MIN_COSINE
    )
    return case


def validate_runtime(
    root: Path, module: ReducedVisionEncoder, atol: float, pipeline: str | None = None, int8: bool = False
) -> Validation:
    """Run the staged artifact (every chunk of ``pipeline``, through the runtime's chunk loader) against PyTorch.

    ``int8``: the artifact's encoder is int8, the reference fp32: fidelity (``int8_fidelity``), not parity."""
    k = module.plan.budget.total
    target = read_manifest(root).target
    count = 2 if sum(p.numel() for p in module.parameters()) < LARGE_PARAMS else 1
    cases = []
    with ChunkLoader(open_artifact(root), pipeline=pipeline) as loader:
        for name, x in validation_inputs(module, randoms=count, samples=count):
            got, ref = loader.run({"pixel_values": x}), reference_outputs(module, x)
            cases.append(int8_fidelity(name, got, ref, k) if int8 else compare(name, got, ref, k, atol))
    if int8:
        return int8_result(cases, atol)
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


def int8_result(cases: list[dict], atol: float) -> Validation:
    overlap = min(c["kept_overlap"] for c in cases)
    cosine = min(c["min_token_cosine"] for c in cases)
    failed = [c for c in cases if not c["passed"]]
    if failed:
        c = failed[0]
        raise ValidationFailed(
            f"the int8 vision encoder strays from fp32 on {c['case']}: {c['kept_overlap']:.0%} of kept positions "
            f"shared (needs {INT8_MIN_OVERLAP:.0%}), min token cosine {c['min_token_cosine']:.4f} "
            f"(needs {INT8_MIN_COSINE}), K exact: {c['k_exact']} - export without --vision-int8"
        )
    note = (
        f"int8 vision vs fp32 PyTorch over {len(cases)} inputs: >= {overlap:.1%} of kept positions shared, "
        f"shared tokens' cosine >= {cosine:.4f} (gates {INT8_MIN_OVERLAP:.0%}, {INT8_MIN_COSINE}), K exact"
    )
    return Validation("fidelity", None, atol, cases, note)


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
