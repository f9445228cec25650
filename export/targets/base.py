"""What every target takes and returns: ``{function: stage}`` in, files and functions out.

A stage is an ``nn.Module`` with ``input_names`` / ``output_names`` (positional in ``forward``); the
functions of one chunk share, where the target allows, their weights. A chunk of one function is the
common case (function name ``forward``, no ``functions`` entry in the manifest); several functions are
the same path, either over one example (``plain`` / ``tdtm``: same inputs and outputs) or each over
its own (``prefill_<P>`` / ``decode``: a language model's graphs, different shapes and names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgetrim.runtime import contract

Functions = dict[str, torch.nn.Module]
Examples = tuple | dict[str, tuple]  # one example for every function, or {function: its example}


def per_function(functions: Functions, example: Examples) -> dict[str, tuple]:
    """``{function: example}`` whether one example is shared or each function has its own."""
    return example if isinstance(example, dict) else dict.fromkeys(functions, example)


@dataclass
class TiedWeight:
    """A chunk weight [N, K] stored in top-level data files rather than the chunk's own: ONNX, the MatMulNBits
    (bits 8) weight of a quantized LM head tied to the token embedding, ``values`` ``q + 128`` uint8 [N, K] and
    ``scales`` float32 [N, K / block], which are also the int8_block embedding table (``files``: the .npy
    names of the two; the graphs reference their bytes past the .npy header)."""

    values: object  # numpy uint8 [N, K]
    scales: object  # numpy float32 [N, K / block]
    files: tuple[str, str]

    @property
    def block(self) -> int:
        return self.values.shape[1] // self.scales.shape[1]


@dataclass
class ChunkFiles:
    """What a target wrote for one chunk."""

    files: list[tuple[Path, str]]  # (path, manifest role), the program(s) first
    functions: dict[str, dict]  # function -> {"file": name in the folder, "method": ...}
    extra: dict = field(default_factory=dict)  # further chunk keys, e.g. quantization


def io_spec(stage: torch.nn.Module, example: tuple, target: str) -> tuple[list[dict], list[dict]]:
    """Chunk inputs/outputs as the artifact exposes them (CoreML has no int64: its ints are int32)."""
    with torch.no_grad():
        outs = stage(*example)
    outs = outs if isinstance(outs, tuple) else (outs,)
    int_dtype = "int32" if target == contract.COREML else "int64"

    def spec(name: str, t: torch.Tensor) -> dict:
        return {"name": name, "shape": list(t.shape), "dtype": "float32" if t.is_floating_point() else int_dtype}

    inputs = [spec(n, t) for n, t in zip(stage.input_names, example, strict=True)]
    return inputs, [spec(n, t) for n, t in zip(stage.output_names, outs, strict=True)]
