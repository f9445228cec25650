"""ExecuTorch target: torch.export -> edge dialect -> XNNPACK partitioner -> one .pte per chunk.

One function: method ``forward``. Several: one program with a method per function
(``forward_<function>``), lowered together so their constants are stored once.
The pip runtime's portable kernels lack sort/argsort/scatter_reduce/bucketize: the reducer graphs
avoid them, and ``check_portable_ops`` treats a program that still uses one as an edgetrim bug.

Quantization (``quantize`` = a key of ``QUANTIZE``): torchao rewrites the ``nn.Linear`` weights of a
copy of the chunk's functions before ``torch.export``; XNNPACK then runs those linears with int8
activations quantized per token at run time. Embeddings, convolutions, norms and attention's
activation products stay float.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from edgetrim.export.targets.base import ChunkFiles, Examples, Functions, per_function
from edgetrim.runtime import contract
from edgetrim.runtime.errors import EdgetrimBug

MISSING_KERNELS = ("sort", "argsort", "scatter_reduce", "bucketize")
QUANTIZE: dict[str, str] = {"int8": contract.INT8_DYNAMIC, "int4": contract.INT4_DYNAMIC}
GROUP = 32  # int4 weights: one scale per 32 inputs of an output channel
QUANT_NAMESPACES = ("torchao.", "quantized_decomposed.")  # quantize / dequantize ops: only XNNPACK runs them


def check_portable_ops(edge) -> None:
    """Every method's ops must have a kernel in ExecuTorch's pip runtime: outside the XNNPACK delegate
    no sort-like op and no quantize / dequantize op (a quantized linear XNNPACK did not take)."""
    for method in edge.methods:
        for node in edge.exported_program(method).graph.nodes:
            target = str(node.target)
            if node.op != "call_function":
                continue
            if any(f"aten.{op}." in target or target.endswith(f"aten.{op}") for op in MISSING_KERNELS):
                raise EdgetrimBug(f"method {method} uses {target}, which ExecuTorch's runtime has no kernel for")
            if target.startswith(QUANT_NAMESPACES):
                raise EdgetrimBug(f"method {method} runs {target} outside XNNPACK: a quantized linear is not delegated")


def float_linear(module: nn.Module, fqn: str = "") -> bool:
    """An ``nn.Linear`` whose weight is still a plain float parameter (not yet quantized; torchao, like
    PyTorch's dynamic quantization, leaves the out_proj of ``nn.MultiheadAttention`` alone)."""
    return (
        isinstance(module, nn.Linear)
        and not isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear)
        and type(module.weight) is nn.Parameter
        and module.weight.is_floating_point()
    )


def quantized_functions(functions: Functions, quantize: str) -> Functions:
    """A quantized copy of ``functions``; the stages passed in (shared with the PyTorch reference the
    export validates against) are never modified.

    ``int8``: every float ``nn.Linear`` gets int8 weights, one scale per output channel
    (``PerAxis(0)``), and int8 activations quantized per token at run time.
    ``int4`` (8da4w): int4 weights, one scale per ``GROUP`` (32) inputs of an output channel, and int8
    activations per token; a linear whose input width is not a multiple of 32 (SigLIP-so400m's fc2,
    4304 inputs) cannot be split in groups and gets the ``int8`` treatment instead: the chunk is
    still marked int4, its bytes are slightly higher than an all-int4 chunk.

    The functions dict is copied as one object (``copy.deepcopy`` with one memo), so a submodule two
    functions share stays shared, is quantized once and stored once. Modules are copied, tensors are
    not (they are pre-seeded in the memo): torchao's ``quantize_`` never writes into a weight, it
    replaces the copied module's ``weight`` attribute by a new quantized parameter, so the copy costs
    no weight memory and the original modules keep their float parameters.
    """
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis, PerGroup, quantize_

    if quantize not in QUANTIZE:
        raise EdgetrimBug(f"ExecuTorch quantization {quantize!r} is not one of {sorted(QUANTIZE)}")
    memo = {id(t): t for stage in functions.values() for t in (*stage.parameters(), *stage.buffers())}
    copies = copy.deepcopy(functions, memo)
    int8 = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
    int4 = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(GROUP))
    for stage in copies.values():  # a module shared by two stages: quantized by the first, skipped after
        if quantize == "int4":
            quantize_(stage, int4, filter_fn=lambda m, fqn: float_linear(m) and m.in_features % GROUP == 0)
        quantize_(stage, int8, filter_fn=float_linear)  # int8, and int4's fallback for the others
    return copies


def write(
    functions: Functions, example: Examples, folder: Path, stem: str, fp16: bool = False, quantize: str | None = None
) -> ChunkFiles:
    """One chunk as one .pte; several functions: one method each, at its own example's shapes, constants
    stored once. ``fp16`` is ignored (ExecuTorch artifacts are fp32); ``quantize``: None, ``int8`` or
    ``int4`` (see ``quantized_functions``), marked ``QUANTIZE[quantize]`` in the chunk."""
    del fp16
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    stages = functions if quantize is None else quantized_functions(functions, quantize)
    single = len(stages) == 1
    methods = {f: contract.DEFAULT_METHOD if single else contract.method_name(f) for f in stages}
    examples = per_function(stages, example)
    with torch.no_grad():
        programs = {methods[f]: torch.export.export(stage, examples[f]) for f, stage in stages.items()}
    edge = to_edge_transform_and_lower(
        next(iter(programs.values())) if single else programs, partitioner=[XnnpackPartitioner()]
    )
    check_portable_ops(edge)
    path = folder / f"{stem}{contract.PROGRAM_SUFFIX[contract.EXECUTORCH]}"
    path.write_bytes(edge.to_executorch().buffer)
    extra = {"quantization": QUANTIZE[quantize]} if quantize else {}
    return ChunkFiles(
        [(path, contract.PROGRAM)], {f: {"file": path.name, "method": m} for f, m in methods.items()}, extra
    )
