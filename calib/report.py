"""The calibration report's choice, as ``edgetrim export --budget auto --calibration DIR`` reads it.

``edgetrim calibrate`` (``edgetrim.calib.calibrate``) writes ``report.json``; this module reads only what an
export bakes from it and refuses a report that cannot apply: missing, for another model or geometry, or one
in which no candidate budget met the target. No torch here: the exporter imports it while it plans.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgetrim.runtime.errors import UserError

REPORT_JSON = "report.json"


def read_report(folder: Path) -> dict:
    """``folder/report.json`` as written by ``edgetrim calibrate``."""
    path = Path(folder) / REPORT_JSON
    if not path.is_file():
        raise UserError(f"`calibration` {folder} holds no {REPORT_JSON}: pass the `out` folder of edgetrim calibrate")
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"`calibration` {path} cannot be read ({exc}): run edgetrim calibrate again") from None
    if not isinstance(report, dict) or "chosen" not in report or "model" not in report:
        raise UserError(f"`calibration` {path} is not an edgetrim calibrate report: run edgetrim calibrate again")
    return report


def calibration_record(
    folder: Path, model: str, kind: str, grid: tuple[int, int], image_size: int
) -> tuple[str, float, dict]:
    """(budget, alpha, the manifest's ``calibration`` record) that the report in ``folder`` chose for ``model``
    exported as ``kind`` at ``grid`` and ``image_size``; refused when the report does not apply."""
    report = read_report(folder)
    if report["model"] != model or report["kind"] != kind:
        raise UserError(
            f"`calibration` {folder} was measured on {report['model']} ({report['kind']}), not {model} ({kind}): "
            "run edgetrim calibrate on this model"
        )
    geometry = report["geometry"]
    if tuple(geometry["grid"]) != tuple(grid) or geometry["image_size"] != image_size:
        rows, cols = geometry["grid"]
        raise UserError(
            f"`calibration` {folder} was measured at grid {rows}x{cols}, image size {geometry['image_size']}; this "
            f"export uses {grid[0]}x{grid[1]}, {image_size}: pass `grid` {rows}x{cols} and `image_size` "
            f"{geometry['image_size']}, or calibrate again"
        )
    chosen = report["chosen"]
    if chosen is None:
        raise UserError(
            f"`calibration` {folder}: no budget met {report['metric']} >= {report['target']}: lower the target or "
            "calibrate larger budgets"
        )
    record = {
        "report": str(Path(folder).resolve()),
        "calibration_set": report["calibration"],
        "metric": report["metric"],
        "target": report["target"],
        "achieved": chosen["achieved"],
        "worst_item": chosen["worst_items"][0]["value"],
        "items": report["items"],
        "budget": chosen["budget"],
        "alpha": chosen["alpha"],
        "random_weights": report["random_weights"],
    }
    return str(chosen["budget"]), float(chosen["alpha"]), record
