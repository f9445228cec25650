"""What an artifact kind hands the build driver: its chunks, pipelines, manifest sections, data files,
the checks that validate it and the facts its report adds. The driver does the rest, for every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgetrim.export.families.checkpoint import Source
from edgetrim.export.validate import Check


@dataclass
class Chunk:
    """One program of the artifact: ``{function: stage}`` sharing input/output names and weights."""

    name: str
    functions: dict[str, torch.nn.Module]
    example: tuple[torch.Tensor, ...]  # inputs in ``input_names`` order, from a reference run
    quantize: str | None = None  # e.g. int8-dynamic (ONNX)

    @property
    def stage(self) -> torch.nn.Module:
        """The first function's stage: its names and output shapes stand for all functions."""
        return next(iter(self.functions.values()))


def single(name: str, stage: torch.nn.Module, example: tuple, quantize: str | None = None) -> Chunk:
    return Chunk(name, {"forward": stage.eval()}, example, quantize)


@dataclass
class DataFile:
    """A top-level file of the artifact (embedding table, tokenizer, null caption): ``write(path)`` makes it."""

    role: str
    name: str
    write: Callable[[Path], None]


@dataclass
class Plan:
    """An artifact kind's whole contribution to one export."""

    kind: str
    source: Source
    precision: str
    chunks: list[Chunk]
    pipelines: dict[str, list[str]]
    sections: dict  # the kind's manifest sections, e.g. reduction + preprocessing + outputs, llm, video
    data_files: list[DataFile] = field(default_factory=list)
    checks: Callable[[Path], list[Check]] = lambda root: []  # built against the staged folder
    summary: dict = field(default_factory=dict)  # facts the report adds (K, latent shape, ...)
    source_extra: dict = field(default_factory=dict)  # source keys beside the common ones (token_dim ...)
    after_write: Callable[[Path, dict], dict] = lambda root, manifest: {}  # report facts from the written artifact
