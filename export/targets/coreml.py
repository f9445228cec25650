"""CoreML target: torch.export -> coremltools mlprogram (.mlpackage), iOS 17+, fp16 by default.

One function: a plain .mlpackage (function ``main``). Several: one multifunction .mlpackage with a
function per chunk function (``forward_<function>``, the first one the default), equal weights
stored once.

Integer bookkeeping (budgets, ranks, positions) must stay exact: coremltools lowers some int64
ops through float casts, so under fp16 those float ops are kept in fp32 (``keep_integers_fp32``).
Prediction needs macOS; on Linux the saved spec is what can be checked.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgetrim.export.targets.base import ChunkFiles, Functions
from edgetrim.runtime import contract

MAIN = "main"  # the function of a single-function CoreML model
NUMPY_DTYPES = {torch.float32: np.float32, torch.int64: np.int32}
INT_TYPES = ("int", "bool")


def _is_int_type(dtype) -> bool:
    name = getattr(dtype, "__name__", str(dtype)).lower()
    return name.startswith(INT_TYPES) or "int" in str(dtype) or "bool" in str(dtype)


def integer_derived_vars(block) -> set[str]:
    """Names of float vars computed only from integer values (casts of ints and float math on them)."""
    derived: set[str] = set()
    for op in block.operations:
        inputs = [v for v in op.inputs.values() if hasattr(v, "name")]
        if op.op_type == "cast" and inputs and _is_int_type(inputs[0].dtype):
            derived.update(o.name for o in op.outputs)
            continue
        flowing = [v for v in inputs if v.op is not None and v.op.op_type != "const"]
        if flowing and all(v.name in derived or _is_int_type(v.dtype) for v in flowing):
            if any(v.name in derived for v in flowing):
                derived.update(o.name for o in op.outputs)
    return derived


def keep_integers_fp32(op) -> bool:
    """FP16ComputePrecision op_selector: True casts the op to fp16, False keeps it fp32."""
    block = op.enclosing_block
    cache = getattr(block, "_edgetrim_int_vars", None)
    if cache is None:
        cache = integer_derived_vars(block)
        block._edgetrim_int_vars = cache
    return not any(getattr(v, "name", None) in cache for v in op.inputs.values())


def convert(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, fp16: bool) -> None:
    """Convert ``module`` at the static shapes of ``example`` and save an .mlpackage at ``path``."""
    import coremltools as ct

    with torch.no_grad():
        outputs = module(*example)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        program = torch.export.export(module, example).run_decompositions({})
    precision = ct.transform.FP16ComputePrecision(op_selector=keep_integers_fp32) if fp16 else ct.precision.FLOAT32
    model = ct.convert(
        program,
        inputs=[
            ct.TensorType(name=name, shape=tuple(x.shape), dtype=np.float32 if x.is_floating_point() else np.int32)
            for name, x in zip(module.input_names, example, strict=True)
        ],
        outputs=[
            ct.TensorType(name=name, dtype=NUMPY_DTYPES[out.dtype])
            for name, out in zip(module.output_names, outputs, strict=True)
        ],
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=precision,
        convert_to="mlprogram",
    )
    model.short_description = (
        "edgetrim chunk: " + ", ".join(module.input_names) + " -> " + ", ".join(module.output_names)
    )
    model.save(str(path))


def write(
    functions: Functions, example: tuple, folder: Path, stem: str, fp16: bool = True, quantize: str | None = None
) -> ChunkFiles:
    del quantize  # no quantized CoreML mode yet
    import coremltools as ct

    path = folder / f"{stem}{contract.PROGRAM_SUFFIX[contract.COREML]}"
    if len(functions) == 1:
        ((function, stage),) = functions.items()
        convert(stage, example, path, fp16)
        return ChunkFiles([(path, contract.PROGRAM)], {function: {"file": path.name, "method": MAIN}})
    tmp = Path(tempfile.mkdtemp(prefix=".coreml-", dir=folder))
    try:
        desc = ct.utils.MultiFunctionDescriptor()
        for function, stage in functions.items():
            single = tmp / f"{function}.mlpackage"
            convert(stage, example, single, fp16)
            desc.add_function(str(single), src_function_name=MAIN, target_function_name=contract.method_name(function))
        desc.default_function_name = contract.method_name(next(iter(functions)))
        ct.utils.save_multifunction(desc, str(path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    methods = {f: {"file": path.name, "method": contract.method_name(f)} for f in functions}
    return ChunkFiles([(path, contract.PROGRAM)], methods)


def spec_summary(path: Path) -> dict:
    """A saved .mlpackage read without macOS: ``functions`` {name: {inputs, outputs}} (``main`` for a
    single-function model; each input/output {name, shape, dtype}), op counts, spec version."""
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()

    def features(items) -> list[dict]:
        out = []
        for f in items:
            arr = f.type.multiArrayType
            dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType).lower()
            out.append({"name": f.name, "shape": [int(s) for s in arr.shape], "dtype": dtype})
        return out

    described = spec.description.functions
    if described:
        functions = {f.name: {"inputs": features(f.input), "outputs": features(f.output)} for f in described}
    else:
        functions = {MAIN: {"inputs": features(spec.description.input), "outputs": features(spec.description.output)}}
    ops: dict[str, int] = {}
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                ops[op.type] = ops.get(op.type, 0) + 1
    return {"functions": functions, "ops": ops, "spec_version": spec.specificationVersion}
