"""CoreML target: torch.export -> coremltools mlprogram (.mlpackage), iOS 17+, fp16 by default.

One function: a plain .mlpackage (function ``main``). Several: one multifunction .mlpackage with a
function per chunk function (``forward_<function>``, the first one the default), equal weights
stored once.

Integer bookkeeping (budgets, ranks, positions) must stay exact: coremltools lowers some int64
ops through float casts, so under fp16 those float ops are kept in fp32 (``keep_integers_fp32``).
Weight-only quantization (``quantize``, ``QUANTIZE``): the const weights of ``linear`` / ``conv`` ops
(at least ``WEIGHT_MIN_ELEMENTS`` elements) are stored linear-symmetric int8 per output channel
(iOS 17, ``constexpr_affine_dequantize``) or int4 in blocks of 32 along the input (iOS 18,
``constexpr_blockwise_shift_scale``), dequantized at load: compute stays float. The compression
pass runs at the end of the conversion's own pass pipeline, after the fp16 casts; every other const
(norms, biases, tables, integer bookkeeping) stays as converted. A multifunction package is an iOS 18
spec whatever its functions' target (``save_multifunction``); its int8 functions keep their iOS 17 ops.
Prediction needs macOS; on Linux the saved spec is what can be checked.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgetrim.export.targets.base import ChunkFiles, Examples, Functions, per_function
from edgetrim.runtime import contract

MAIN = "main"  # the function of a single-function CoreML model
QUANTIZE: dict[str, str] = {"int8": contract.INT8_WEIGHT, "int4": contract.INT4_WEIGHT}
WEIGHT_OPS = ("linear", "conv", "conv_transpose")  # ops whose const weights are quantized
WEIGHT_MIN_ELEMENTS = 2048  # weights with fewer elements (norms, biases, small tables) stay float
INT4_BLOCK = 32  # int4 weights: one scale per 32 input elements of an output channel
QUANTIZED_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")  # iOS 17 int8, iOS 18 int4
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


def quantize_mode(quantize: str | None) -> str | None:
    """``int8`` / ``int4`` (or the contract's names for them) -> the ``QUANTIZE`` key; None stays None."""
    if quantize is None:
        return None
    for key, name in QUANTIZE.items():
        if quantize in (key, name):
            return key
    choices = ", ".join(f"{k} ({v})" for k, v in QUANTIZE.items())
    raise ValueError(f"CoreML quantization {quantize!r} is unknown: choose one of {choices}, or None for float")


def quantizer_config(mode: str):
    """The weight-only linear quantizer for ``mode`` (``int8`` / ``int4``), on ``WEIGHT_OPS`` only."""
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig

    if mode == "int8":
        op = OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_MIN_ELEMENTS - 1
        )
    else:
        op = OpLinearQuantizerConfig(
            mode="linear_symmetric",
            dtype="int4",
            granularity="per_block",
            block_size=INT4_BLOCK,
            weight_threshold=WEIGHT_MIN_ELEMENTS - 1,
        )
    return OptimizationConfig(op_type_configs=dict.fromkeys(WEIGHT_OPS, op))


def deployment_target(mode: str | None, stateful: bool = False):
    """iOS 17; iOS 18 for int4 per-block weights (``constexpr_blockwise_shift_scale``) and for model state."""
    import coremltools as ct

    return ct.target.iOS18 if mode == "int4" or stateful else ct.target.iOS17


def state_specs(module: torch.nn.Module, fp16: bool) -> list[dict]:
    """A stage's model state (its ``state_names`` buffers, written in place): [{name, shape, dtype}]."""
    dtype = "float16" if fp16 else "float32"
    return [
        {"name": name, "shape": list(getattr(module, name).shape), "dtype": dtype}
        for name in getattr(module, "state_names", [])
    ]


def pass_pipeline(mode: str | None, stateful: bool = False):
    """The converter's default passes without ``common::const_deduplication`` (equal constants, e.g. a linear's
    zero bias and a layer norm's zero beta, merged into one: the quantizer then refuses that constant, read by
    an op it quantizes and one it does not - "compression config conflict" - and float and quantized packages
    would differ in more than their weights); quantized: then ``compression::linear_quantize_weights`` (after
    the fp16 casts: fp16 weights are what it quantizes).
    Stateful: without ``common::canonicalize_inplace_pattern`` (coremltools 9.0 fails in it on two state
    updates whose values are computed back to back, as every KV-cache layer's are; it only moves each
    update next to its value)."""
    import coremltools as ct

    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(["common::const_deduplication"])
    if stateful:
        pipeline.remove_passes(["common::canonicalize_inplace_pattern"])
    if mode is None:
        return pipeline
    pipeline.append_pass("compression::linear_quantize_weights")
    pipeline.set_options("compression::linear_quantize_weights", {"config": quantizer_config(mode)})
    return pipeline


def convert(
    module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, fp16: bool, quantize: str | None = None
) -> None:
    """Convert ``module`` at the static shapes of ``example`` and save an .mlpackage at ``path``;
    ``quantize`` ``int8`` / ``int4``: weight-only quantized weights (see the module docstring)."""
    import coremltools as ct

    mode = quantize_mode(quantize)
    states = state_specs(module, fp16)
    with torch.no_grad():
        outputs = module(*example)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        program = torch.export.export(module, example).run_decompositions({})
        for state in states:  # the reference run wrote into them: state starts at zero on device
            getattr(module, state["name"]).zero_()
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
        states=[
            ct.StateType(
                wrapped_type=ct.TensorType(shape=tuple(s["shape"]), dtype=np.float16 if fp16 else np.float32),
                name=s["name"],
            )
            for s in states
        ]
        or None,
        minimum_deployment_target=deployment_target(mode, bool(states)),
        compute_precision=precision,
        convert_to="mlprogram",
        pass_pipeline=pass_pipeline(mode, bool(states)),
    )
    model.short_description = (
        "edgetrim chunk: " + ", ".join(module.input_names) + " -> " + ", ".join(module.output_names)
    )
    model.save(str(path))


def write(
    functions: Functions,
    example: Examples,
    folder: Path,
    stem: str,
    fp16: bool = True,
    quantize: str | None = None,
    separate: bool = False,
) -> ChunkFiles:
    """One chunk as one .mlpackage (several functions: one multifunction package, equal weights stored
    once, iOS 18; ``separate``: one package per function, ``<stem>.<function>.mlpackage``, iOS 17).
    ``quantize``: None (float), ``int8`` or ``int4`` weight-only (``QUANTIZE``), each function quantized
    as it is converted, before the multifunction save. Stages with ``state_names`` buffers keep them as
    Core ML state (``StateType``, iOS 18), listed in the chunk's ``states``."""
    import coremltools as ct

    mode = quantize_mode(quantize)
    states = state_specs(next(iter(functions.values())), fp16)
    extra = ({"quantization": QUANTIZE[mode]} if mode else {}) | ({"states": states} if states else {})
    suffix = contract.PROGRAM_SUFFIX[contract.COREML]
    path = folder / f"{stem}{suffix}"
    examples = per_function(functions, example)
    if len(functions) == 1 or separate:
        files, entries = [], {}
        for i, (function, stage) in enumerate(functions.items()):
            single = path if len(functions) == 1 else folder / f"{stem}.{function}{suffix}"
            convert(stage, examples[function], single, fp16, mode)
            files.append((single, contract.program_role(function, i == 0)))
            entries[function] = {"file": single.name, "method": MAIN}
        return ChunkFiles(files, entries, extra)
    tmp = Path(tempfile.mkdtemp(prefix=".coreml-", dir=folder))
    try:
        desc = ct.utils.MultiFunctionDescriptor()
        for function, stage in functions.items():
            single = tmp / f"{function}.mlpackage"
            convert(stage, examples[function], single, fp16, mode)
            desc.add_function(str(single), src_function_name=MAIN, target_function_name=contract.method_name(function))
        desc.default_function_name = contract.method_name(next(iter(functions)))
        ct.utils.save_multifunction(desc, str(path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    methods = {f: {"file": path.name, "method": contract.method_name(f)} for f in functions}
    return ChunkFiles([(path, contract.PROGRAM)], methods, extra)


def quantized_dtype(op) -> str | None:
    """The stored dtype (``int8``, ``int4``, ...) of a weight-quantization op's data, from the spec."""
    from coremltools.proto import MIL_pb2

    if op.type == "constexpr_affine_dequantize":  # iOS 16/17: the data is an attribute
        value = op.attributes.get("quantized_data")
    elif op.type == "constexpr_blockwise_shift_scale":  # iOS 18: the data is an input
        args = op.inputs["data"].arguments if "data" in op.inputs else []
        value = args[0].value if args and args[0].HasField("value") else None
    else:
        return None
    return None if value is None else MIL_pb2.DataType.Name(value.type.tensorType.dataType).lower()


def spec_summary(path: Path) -> dict:
    """A saved .mlpackage read without macOS: ``functions`` {name: {inputs, outputs, states}} (``main`` for a
    single-function model; each input/output/state {name, shape, dtype}), op counts (``ops``, every function),
    ``spec_version`` and its ``deployment_target`` (e.g. ``iOS17``), ``opsets`` (e.g. ``CoreML7``),
    ``quantization_ops`` (counts of ``QUANTIZED_OPS``) and ``quantized_dtypes`` (their stored weight
    dtypes, e.g. {"int4": 10}): both empty for float weights."""
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()

    def states(items) -> list[dict]:
        out = []
        for s in items:
            arr = s.type.stateType.arrayType
            dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType).lower()
            out.append({"name": s.name, "shape": [int(d) for d in arr.shape], "dtype": dtype})
        return out

    def features(items) -> list[dict]:
        out = []
        for f in items:
            arr = f.type.multiArrayType
            dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType).lower()
            out.append({"name": f.name, "shape": [int(s) for s in arr.shape], "dtype": dtype})
        return out

    described = spec.description.functions
    if described:
        functions = {
            f.name: {"inputs": features(f.input), "outputs": features(f.output), "states": states(f.state)}
            for f in described
        }
    else:
        d = spec.description
        functions = {MAIN: {"inputs": features(d.input), "outputs": features(d.output), "states": states(d.state)}}
    ops: dict[str, int] = {}
    quantized: dict[str, int] = {}
    opsets: set[str] = set()
    for function in spec.mlProgram.functions.values():
        opsets.add(function.opset)
        for block in function.block_specializations.values():
            for op in block.operations:
                ops[op.type] = ops.get(op.type, 0) + 1
                dtype = quantized_dtype(op) if op.type in QUANTIZED_OPS else None
                if dtype is not None:
                    quantized[dtype] = quantized.get(dtype, 0) + 1
    try:
        target = ct.target(spec.specificationVersion).name
    except ValueError:
        target = None
    return {
        "functions": functions,
        "ops": ops,
        "spec_version": spec.specificationVersion,
        "deployment_target": target,
        "opsets": sorted(opsets),
        "quantization_ops": {t: ops[t] for t in QUANTIZED_OPS if t in ops},
        "quantized_dtypes": quantized,
    }
