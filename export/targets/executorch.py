"""ExecuTorch target: torch.export -> edge dialect -> XNNPACK partitioner -> one .pte per chunk.

One function: method ``forward``. Several: one program with a method per function
(``forward_<function>``), lowered together so their constants are stored once.
The pip runtime's portable kernels lack sort/argsort/scatter_reduce/bucketize: the reducer graphs
avoid them, and ``check_portable_ops`` treats a program that still uses one as an edgetrim bug.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgetrim.export.targets.base import ChunkFiles, Functions
from edgetrim.runtime import contract
from edgetrim.runtime.errors import EdgetrimBug

MISSING_KERNELS = ("sort", "argsort", "scatter_reduce", "bucketize")


def check_portable_ops(edge) -> None:
    """Every method's ops must have a kernel in ExecuTorch's pip runtime."""
    for method in edge.methods:
        for node in edge.exported_program(method).graph.nodes:
            target = str(node.target)
            if node.op == "call_function" and any(
                f"aten.{op}." in target or target.endswith(f"aten.{op}") for op in MISSING_KERNELS
            ):
                raise EdgetrimBug(f"method {method} uses {target}, which ExecuTorch's runtime has no kernel for")


def write(
    functions: Functions, example: tuple, folder: Path, stem: str, fp16: bool = False, quantize: str | None = None
) -> ChunkFiles:
    del fp16, quantize  # ExecuTorch artifacts are fp32
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    single = len(functions) == 1
    methods = {f: contract.DEFAULT_METHOD if single else contract.method_name(f) for f in functions}
    with torch.no_grad():
        programs = {methods[f]: torch.export.export(stage, example) for f, stage in functions.items()}
    edge = to_edge_transform_and_lower(
        next(iter(programs.values())) if single else programs, partitioner=[XnnpackPartitioner()]
    )
    check_portable_ops(edge)
    path = folder / f"{stem}{contract.PROGRAM_SUFFIX[contract.EXECUTORCH]}"
    path.write_bytes(edge.to_executorch().buffer)
    return ChunkFiles([(path, contract.PROGRAM)], {f: {"file": path.name, "method": m} for f, m in methods.items()})
