"""The token-embedding table of a language-model or vlm artifact (numpy only): the top-level ``embedding``
file [V, D], memory-mapped, each looked-up row widened to float32.

Stored as the manifest's ``llm.embedding_dtype`` says: ``float32``; ``float16`` (unquantized tables over
256 MB in float32); ``int8`` (quantized exports): symmetric per row, ``q = round(row / scale)`` in
[-127, 127] with ``scale = max|row| / 127`` (1 for an all-zero row: its q is zeros whatever the scale, and
1 keeps the division finite), the scales [V] float32 in the ``embedding_scales`` file. A looked-up int8 row
is ``q * scale`` in float32, within ``scale / 2`` of the float row; only the rows looked up are
dequantized, never the whole table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgetrim.runtime.contract import EMBEDDING, EMBEDDING_INT8, EMBEDDING_SCALES
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import Artifact


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[V, D] float -> (int8 [V, D], float32 scales [V]), symmetric per row (see the module doc)."""
    table = np.asarray(table, np.float32)
    scales = np.abs(table).max(axis=1) / np.float32(127)
    scales[scales == 0] = 1
    return np.clip(np.rint(table / scales[:, None]), -127, 127).astype(np.int8), scales


class EmbeddingTable:
    """Rows of a [V, D] table: float32 / float16 ``values``, or int8 ``values`` with ``scales`` [V] float32."""

    def __init__(self, values: np.ndarray, scales: np.ndarray | None = None) -> None:
        if values.ndim != 2:
            raise UserError(f"the embedding table has shape {list(values.shape)}, not [V, D]: re-export the artifact")
        if (values.dtype == np.int8) != (scales is not None):
            raise UserError(
                f"the embedding table is {values.dtype} {'with' if scales is not None else 'without'} "
                f"{EMBEDDING_SCALES}: int8 tables (and only they) need their per-row scales, re-export the artifact"
            )
        if scales is not None and (scales.dtype != np.float32 or scales.shape != values.shape[:1]):
            raise UserError(
                f"{EMBEDDING_SCALES} is {scales.dtype} {list(scales.shape)}, not float32 [{values.shape[0]}] "
                "(one scale per row of the table): re-export the artifact"
            )
        self.values, self.scales = values, scales

    @classmethod
    def open(cls, artifact: Artifact) -> EmbeddingTable:
        """The artifact's table (memory-mapped), as its ``llm.embedding_dtype`` says."""
        dtype = artifact.manifest["llm"].get("embedding_dtype")
        values = np.load(artifact.data_file(EMBEDDING), mmap_mode="r")
        if str(values.dtype) != dtype:
            raise UserError(
                f"{artifact.root}: the embedding table is {values.dtype}, the manifest says {dtype}: "
                "re-export the artifact"
            )
        if dtype != EMBEDDING_INT8:
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
        if self.scales is not None:
            rows *= self.scales[ids][:, None]
        return rows
