"""Budget sweeps: the same VLM re-exported at other HiRED budgets and measured side by side.

This sits above the exporter and the runtime: it re-exports (``edgetrim.export``) from the options a
manifest records, then measures each variant in fresh processes (``edgetrim.runtime.vlm_bench``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.genai_bench import PRECISIONS, GenaiVariant
from edgetrim.runtime.manifest import read_manifest
from edgetrim.runtime.vlm_bench import bench_vlm


def parse_budgets(text: str) -> list[str]:
    budgets = [b.strip() for b in text.split(",") if b.strip()]
    try:
        if not budgets or any(not 0 < float(b) <= 1 for b in budgets):
            raise ValueError
    except ValueError:
        raise UserError(f"`budgets` {text!r}: pass fractions in (0, 1], e.g. 1.0,0.5,0.2,0.1") from None
    return budgets


def budget_variant(
    root: Path, budget: str, out: Path, step: Callable[[str], None] = lambda name: None, quantize: str | None = None
) -> Path:
    """The artifact ``root`` re-exported at ``budget`` (1.0: no reduction) and ``quantize`` (None: as recorded)
    into ``out/budget-<budget>[-<quantize>]``.

    Every other option as the manifest's ``export_options`` records it; ``root`` itself when it already has
    that budget and quantization, an earlier variant when one is there.
    """
    from edgetrim.export.build import export
    from edgetrim.export.options import QUANTIZED_ONLY, ExportOptions

    manifest = read_manifest(root).manifest
    recorded = manifest.get("export_options")
    if recorded is None:
        raise UserError(f"{root} records no export options (exported by an older edgetrim): re-export it")
    method = "none" if float(budget) == 1.0 else "hired"
    own = recorded.get("quantize", "none")
    wanted = {**recorded, "quantize": quantize or own}
    if wanted["quantize"] == "none":  # gates and calibration data go with quantized exports only
        wanted = {k: v for k, v in wanted.items() if k not in QUANTIZED_ONLY}

    def matches(m: dict) -> bool:
        r = m["reduction"]
        same = r["method"] == method and (method == "none" or float(r["requested_budget"]) == float(budget))
        others = {k: v for k, v in m.get("export_options", {}).items() if k not in ("budget", "reduce")}
        return same and all(others.get(k) == v for k, v in wanted.items() if k not in ("budget", "reduce"))

    if matches(manifest):
        return root
    folder = out / (f"budget-{budget}" if wanted["quantize"] == own else f"budget-{budget}-{wanted['quantize']}")
    if (folder / contract.MANIFEST).is_file() and matches(read_manifest(folder).manifest):
        return folder
    known = {f.name for f in fields(ExportOptions)}
    opts = ExportOptions(**{k: v for k, v in wanted.items() if k in known})
    opts.budget, opts.reduce, opts.out, opts.with_llm = budget, method, folder, manifest["kind"] == contract.VLM
    step(f"export budget {budget}, quantize {wanted['quantize']}")
    export(opts, step=step)
    return folder


def parse_precisions(text: str) -> list[str]:
    from edgetrim.export.options import QUANTIZE_MODES

    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in QUANTIZE_MODES for m in modes):
        raise UserError(f"`precisions` {text!r}: pass quantize modes from {', '.join(QUANTIZE_MODES)}, e.g. none,int4")
    return modes


def bench_budgets(
    root: Path,
    budgets: list[str],
    out: Path,
    max_new_tokens: int,
    runs: int,
    step: Callable[[str], None],
    precisions: list[str] | None = None,
    genai: list[str] | None = None,
) -> dict:
    """Every (precision, budget) variant measured in interleaved rounds of fresh processes; JSON, markdown,
    PNG in ``out``. ``precisions``: quantize modes (None: the artifact's own). ``genai``: builder precisions of
    onnxruntime-genai's model to measure in the same rounds, at every budget, each fed the image, prompt and
    visual tokens of our variant of the matching quantize mode (int4 - int4, fp32 - none; else the first)."""
    from edgetrim.export.genai import build_genai

    manifest = read_manifest(root).manifest
    if manifest["kind"] != contract.VLM:
        raise UserError(f"{root} is a {manifest['kind']} artifact: budget sweeps take vlm artifacts")
    modes = precisions or [manifest.get("export_options", {}).get("quantize", "none")]
    models = {precision: build_genai(root, precision, step) for precision in genai or []}  # before any export
    variants = [(mode, b, budget_variant(root, b, out / "artifacts", step, mode)) for mode in modes for b in budgets]
    roots = [r for _, _, r in variants]
    genai_variants = []
    for precision, model in models.items():
        for b in budgets:
            at_b = [(mode, r) for mode, budget, r in variants if budget == b]
            artifact = next((r for mode, r in at_b if mode == PRECISIONS[precision]), at_b[0][1])
            genai_variants.append(GenaiVariant(artifact, model, precision))
    meta = {
        "model": manifest["source"]["name"],
        "target": manifest["target"],
        "quantize": modes[0] if len(modes) == 1 else ",".join(modes),
        "random_weights": manifest["source"]["random_weights"],
        "budgets": budgets,
        "precisions": modes,
        "genai": genai or [],
    }
    return bench_vlm(roots, out, max_new_tokens, runs, meta, step, genai_variants)
