"""The token-embedding table of a language-model or vlm artifact (numpy only): the top-level ``embedding``
file [V, D], memory-mapped, each looked-up row widened to float32.

Stored as the manifest's ``llm.embedding_dtype`` says: ``float32``; ``float16`` (unquantized tables over
256 MB in float32); ``int8`` (quantized exports): symmetric per row, ``q = round(row / scale)`` in
[-127, 127] with ``scale = max|row| / 127`` (1 for an all-zero row: its q is zeros whatever the scale, and
1 keeps the division finite), the scales [V] float32 in the ``embedding_scales`` file. A looked-up int8 row
is ``q * scale`` in float32, within ``scale / 2`` of the float row; only the rows looked up are
dequantized, never the whole table.

``int8_block`` (quantized ONNX exports of a model whose LM head is tied to the table): the same symmetric
int8 in blocks of ``block`` values along D (a scale per block, [V, D / block] float32), stored as
``q + 128`` in uint8 [V, D]: the layout of ONNX Runtime's MatMulNBits weight (bits 8, zero point 128), so
the head chunk's graphs (``llm.embedding_tied``) read these very files as their weight and the artifact
holds the matrix once. Row i is ``(values[i] - 128) * scales[i]`` repeated over each block.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgetrim.runtime.contract import (
    EMBEDDING,
    EMBEDDING_INT8,
    EMBEDDING_INT8_BLOCK,
    EMBEDDING_SCALES,
    EMBEDDING_ZERO_POINT,
)
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import Artifact

NPY_DTYPES = {EMBEDDING_INT8: "int8", EMBEDDING_INT8_BLOCK: "uint8"}  # llm.embedding_dtype -> .npy dtype


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[V, D] float -> (int8 [V, D], float32 scales [V]), symmetric per row (see the module doc)."""
    table = np.asarray(table, np.float32)
    scales = np.abs(table).max(axis=1) / np.float32(127)
    scales[scales == 0] = 1
    return np.clip(np.rint(table / scales[:, None]), -127, 127).astype(np.int8), scales


def quantize_blocks(table: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """[V, D] float -> (uint8 ``q + 128`` [V, D], float32 scales [V, D / block]): symmetric int8 per block of
    ``block`` values along D (scale ``max|block| / 127``, 1 for an all-zero block), MatMulNBits' bits-8 layout."""
    table = np.asarray(table, np.float32)
    v, d = table.shape
    blocks = table.reshape(v, d // block, block)
    scales = np.abs(blocks).max(axis=2) / np.float32(127)
    scales[scales == 0] = 1
    q = np.clip(np.rint(blocks / scales[..., None]), -127, 127).astype(np.int16) + EMBEDDING_ZERO_POINT
    return q.astype(np.uint8).reshape(v, d), scales.astype(np.float32)


class EmbeddingTable:
    """Rows of a [V, D] table: float32 / float16 ``values``; int8 ``values`` with ``scales`` [V] float32; or
    uint8 ``values`` (``q + 128``) with ``scales`` [V, D / block] float32 (int8_block)."""

    def __init__(self, values: np.ndarray, scales: np.ndarray | None = None) -> None:
        if values.ndim != 2:
            raise UserError(f"the embedding table has shape {list(values.shape)}, not [V, D]: re-export the artifact")
        quantized = values.dtype in (np.int8, np.uint8)
        if quantized != (scales is not None):
            raise UserError(
                f"the embedding table is {values.dtype} {'with' if scales is not None else 'without'} "
                f"{EMBEDDING_SCALES}: int8 tables (and only they) need their scales, re-export the artifact"
            )
        if scales is not None:
            v, d = values.shape
            if values.dtype == np.int8:
                fits, wanted = scales.shape == (v,), f"[{v}] (one scale per row of the table)"
            else:
                blocks = scales.shape[1] if scales.ndim == 2 else 0
                fits = scales.ndim == 2 and scales.shape[0] == v and blocks > 0 and d % blocks == 0
                wanted = f"[{v}, G] with G dividing {d} (one scale per block of each row)"
            if scales.dtype != np.float32 or not fits:
                raise UserError(
                    f"{EMBEDDING_SCALES} is {scales.dtype} {list(scales.shape)}, not float32 {wanted}: "
                    "re-export the artifact"
                )
        self.values, self.scales = values, scales

    @classmethod
    def open(cls, artifact: Artifact) -> EmbeddingTable:
        """The artifact's table (memory-mapped), as its ``llm.embedding_dtype`` says."""
        dtype = artifact.manifest["llm"].get("embedding_dtype")
        values = np.load(artifact.data_file(EMBEDDING), mmap_mode="r")
        if str(values.dtype) != NPY_DTYPES.get(dtype, dtype):
            raise UserError(
                f"{artifact.root}: the embedding table is {values.dtype}, the manifest says {dtype}: "
                "re-export the artifact"
            )
        if dtype not in NPY_DTYPES:
            return cls(values)  # an int8 table without scales is refused when the manifest is read
        return cls(values, np.load(artifact.data_file(EMBEDDING_SCALES), mmap_mode="r"))

    @property
    def width(self) -> int:
        """D."""
        return self.values.shape[1]

    @property
    def vocab(self) -> int:
        """V."""
        return self.values.shape[0]

    def rows(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """[n, D] float32 (a writable copy) of the ``ids`` [n]: int8 rows times their scales."""
        ids = np.asarray(ids, np.int64)
        rows = np.array(self.values[ids], np.float32)
        if self.scales is None:
            return rows
        if self.values.dtype == np.uint8:
            rows -= EMBEDDING_ZERO_POINT
            scales = np.asarray(self.scales[ids], np.float32)
            return rows * np.repeat(scales, self.width // scales.shape[1], axis=1)
        rows *= self.scales[ids][:, None]
        return rows
