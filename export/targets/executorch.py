"""ExecuTorch target: torch.export -> edge dialect -> XNNPACK partitioner -> .pte.

The pip runtime's portable kernels lack sort/argsort/scatter_reduce/bucketize: the reducer
graphs avoid them, and ``check_portable_ops`` refuses a program that still uses one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgetrim.runtime.errors import UserError

MISSING_KERNELS = ("sort", "argsort", "scatter_reduce", "bucketize")


def check_portable_ops(program) -> None:
    for node in program.exported_program().graph.nodes:
        if node.op == "call_function" and any(
            f"aten.{op}." in str(node.target) or str(node.target).endswith(f"aten.{op}") for op in MISSING_KERNELS
        ):
            raise UserError(
                f"the graph uses {node.target}, which ExecuTorch's runtime has no kernel for: "
                "report this as an edgetrim bug"
            )


def export_executorch(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> list[Path]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        exported = torch.export.export(module, example)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    check_portable_ops(edge)
    program = edge.to_executorch()
    path.write_bytes(program.buffer)
    return [path]
