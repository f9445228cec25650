"""What an artifact kind hands the build driver: its chunks, pipelines, manifest sections, data files,
the checks that validate it and the facts its report adds. The driver does the rest, for every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgetrim.calib.data import CalibrationSet, calibration_set
from edgetrim.export.families.checkpoint import Source
from edgetrim.export.options import KIND_OPTIONS, ExportOptions, quantize_mode
from edgetrim.export.targets import target_module
from edgetrim.export.validate import Check, Fidelity, LanguageFidelity


@dataclass
class Chunk:
    """One program of the artifact: ``{function: stage}`` sharing input/output names and weights."""

    name: str
    functions: dict[str, torch.nn.Module]
    example: tuple[torch.Tensor, ...]  # inputs in ``input_names`` order, from a reference run
    quantize: str | None = None  # None, int8 or int4: the target picks its scheme (``QUANTIZE``)

    @property
    def stage(self) -> torch.nn.Module:
        """The first function's stage: its names and output shapes stand for all functions."""
        return next(iter(self.functions.values()))


def single(name: str, stage: torch.nn.Module, example: tuple, quantize: str | None = None) -> Chunk:
    return Chunk(name, {"forward": stage.eval()}, example, quantize)


@dataclass
class Quantization:
    """An export's quantization: the mode (``none``, ``int8``, ``int4``), the calibration set its gates run
    on (None for ``none``) and the gates, from the options or their defaults."""

    mode: str
    calibration: CalibrationSet | None
    vision_gate: Fidelity | None  # None: the kind has no vision chunks
    language_gate: LanguageFidelity | None  # None: the kind has no language model

    @property
    def on(self) -> bool:
        return self.mode != "none"

    def describe(self) -> dict:
        """The report's and manifest's record: mode, calibration set (with its sha256), gates."""
        if not self.on:
            return {"mode": "none"}
        return {"mode": self.mode, "calibration": self.calibration.describe()}


def quantization(opts: ExportOptions, kind: str, modes: tuple[str, ...], random_weights: bool) -> Quantization:
    """The requested mode among ``modes`` (the kind's) that the target can do, else refused in one line."""
    can = getattr(target_module(opts.target), "QUANTIZE", {})
    mode = quantize_mode(opts, kind, tuple(m for m in modes if m in can))
    names = KIND_OPTIONS[kind]

    def option(name: str):
        return opts.value(name, kind) if name in names else None

    vision_gate = Fidelity(option("gate_overlap"), option("gate_token_cosine")) if "gate_overlap" in names else None
    language_gate = (
        LanguageFidelity(option("gate_top1"), option("gate_logit_cosine"), option("gate_greedy"), not random_weights)
        if "gate_top1" in names
        else None
    )
    calibration = calibration_set(option("calib_images"), option("calib_prompts")) if mode != "none" else None
    return Quantization(mode, calibration, vision_gate, language_gate)


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
