"""ONNX target: torch.onnx dynamo exporter, opset 18, weights in external data once the model is large."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

OPSET = 18
EXTERNAL_DATA_BYTES = 1 << 30  # protobuf's 2 GB cap: move weights out well before it


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def export_onnx(
    module: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    input_names: list[str],
    output_names: list[str],
) -> list[Path]:
    """Export at the static shape of ``example``; returns the files written (model, external data)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            optimize=True,
            verbose=False,
        )
    external = parameter_bytes(module) >= EXTERNAL_DATA_BYTES
    program.save(str(path), external_data=external)
    files = [path]
    data = path.with_name(path.name + ".data")
    if data.exists():
        files.append(data)
    return files
