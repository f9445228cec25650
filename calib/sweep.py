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


def budget_variant(root: Path, budget: str, out: Path, step: Callable[[str], None] = lambda name: None) -> Path:
    """The artifact ``root`` re-exported at ``budget`` (1.0: no reduction) into ``out/budget-<budget>``.

    Every other option as the manifest's ``export_options`` records it; ``root`` itself when it already has
    that budget, an earlier variant when one is there.
    """
    from edgetrim.export.build import export
    from edgetrim.export.options import ExportOptions

    manifest = read_manifest(root).manifest
    recorded = manifest.get("export_options")
    if recorded is None:
        raise UserError(f"{root} records no export options (exported by an older edgetrim): re-export it")
    method = "none" if float(budget) == 1.0 else "hired"

    def matches(m: dict) -> bool:
        r = m["reduction"]
        same = r["method"] == method and (method == "none" or float(r["requested_budget"]) == float(budget))
        others = {k: v for k, v in m.get("export_options", {}).items() if k not in ("budget", "reduce")}
        return same and others == {k: v for k, v in recorded.items() if k not in ("budget", "reduce")}

    if matches(manifest):
        return root
    folder = out / f"budget-{budget}"
    if (folder / contract.MANIFEST).is_file() and matches(read_manifest(folder).manifest):
        return folder
    known = {f.name for f in fields(ExportOptions)}
    if recorded.get("quantize", "none") == "none":  # gates and calibration data go with quantized exports only
        known -= {k for k in recorded if k.startswith(("gate_", "calib_"))}
    opts = ExportOptions(**{k: v for k, v in recorded.items() if k in known})
    opts.budget, opts.reduce, opts.out, opts.with_llm = budget, method, folder, manifest["kind"] == contract.VLM
    step(f"export budget {budget} (K {manifest['reduction']['tokens']} at {manifest['reduction']['requested_budget']})")
    export(opts, step=step)
    return folder


def bench_budgets(
    root: Path, budgets: list[str], out: Path, max_new_tokens: int, runs: int, step: Callable[[str], None]
) -> dict:
    """Every budget's variant measured in interleaved rounds of fresh processes; JSON, markdown, PNG in ``out``."""
    manifest = read_manifest(root).manifest
    if manifest["kind"] != contract.VLM:
        raise UserError(f"{root} is a {manifest['kind']} artifact: budget sweeps take vlm artifacts")
    roots = [budget_variant(root, budget, out / "artifacts", step) for budget in budgets]
    meta = {
        "model": manifest["source"]["name"],
        "target": manifest["target"],
        "quantize": manifest.get("export_options", {}).get("quantize", "none"),
        "random_weights": manifest["source"]["random_weights"],
        "budgets": budgets,
    }
    return bench_vlm(roots, out, max_new_tokens, runs, meta, step)
