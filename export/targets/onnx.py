"""ONNX target: torch.onnx dynamo exporter, opset 18, weights in external data when large or chunked.

``optimize_for_runtime`` runs ONNX Runtime's graph optimizations once at export time and saves the
result, so a runtime that loads chunks on demand opens sessions with optimizations disabled.
``quantize_int8_dynamic`` turns the weight MatMuls of a graph into ONNX Runtime's dynamic int8 ones
(int8 weights per output channel, activations quantized per run).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

OPSET = 18
EXTERNAL_DATA_BYTES = 1 << 30  # protobuf's 2 GB cap: move weights out well before it
OPTIMIZATION = "extended"  # portable fusions; 'all' adds layout changes tied to the exporting CPU


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def export_onnx(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    external_data: bool | None = None,
) -> list[Path]:
    """Export at the static shapes of ``example``; returns the files written (model, external data)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            optimize=True,
            verbose=False,
        )
    if external_data is None:
        external_data = parameter_bytes(module) >= EXTERNAL_DATA_BYTES
    program.save(str(path), external_data=external_data)
    return onnx_files(path)


def onnx_files(path: Path) -> list[Path]:
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]


def optimize_for_runtime(path: Path) -> list[Path]:
    """Replace ``path`` (and its .data) by ONNX Runtime's optimized graph, weights kept external."""
    import onnxruntime as ort

    tmp = path.with_name(f"opt-{path.name}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", path.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    old_data = path.with_name(path.name + ".data")
    if old_data.exists():
        old_data.rename(path.with_name(f"src-{path.name}.data"))
        _retarget_external_data(path, f"src-{path.name}.data")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    path.unlink()
    src = path.with_name(f"src-{path.name}.data")
    if src.exists():
        src.unlink()
    tmp.rename(path)
    return onnx_files(path)


def quantize_int8_dynamic(path: Path) -> list[Path]:
    """Replace ``path`` (and its .data) by its dynamic-int8 version, optimized again for the runtime.

    Only MatMuls with a constant weight are quantized (attention's activation products stay float).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(f"int8-{path.name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            path,
            tmp,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            extra_options={"MatMulConstBOnly": True},
            use_external_data_format=True,
        )
    for old in onnx_files(path):
        old.unlink()
    tmp.rename(path)
    tmp.with_name(tmp.name + ".data").rename(path.with_name(path.name + ".data"))
    _retarget_external_data(path, path.name + ".data")
    return optimize_for_runtime(path)


def _retarget_external_data(path: Path, data_name: str) -> None:
    """Point every external initializer of ``path`` at ``data_name`` (same folder)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_name
    onnx.save(model, str(path))
