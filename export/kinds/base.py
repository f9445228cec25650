"""What an artifact kind hands the build driver: its chunks, pipelines, manifest sections, data files,
the checks that validate it and the facts its report adds. The driver does the rest, for every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from edgetrim.calib.data import CalibrationSet, calibration_set
from edgetrim.export.families.checkpoint import Source
from edgetrim.export.options import KIND_OPTIONS, ExportOptions, quantize_mode
from edgetrim.export.targets import target_module
from edgetrim.export.targets.base import Examples, TiedWeight, per_function
from edgetrim.export.validate import CaptionFidelity, Check, Fidelity, LanguageFidelity, VelocityFidelity


@dataclass
class Chunk:
    """One program of the artifact: ``{function: stage}`` sharing weights. With one example the functions
    share input/output names and shapes (``plain`` / ``tdtm``); ``{function: example}`` gives each its own
    (a language model's ``prefill_<P>`` / ``decode``)."""

    name: str
    functions: dict[str, torch.nn.Module]
    example: Examples  # inputs in ``input_names`` order, from a reference run (or one such per function)
    quantize: str | None = None  # None, int8 or int4: the target picks its scheme (``QUANTIZE``)
    coreml_ios17: bool = False  # Core ML: one package per function, not a multifunction one (iOS 18)
    tied: TiedWeight | None = None  # ONNX: a weight read from top-level data files (a tied LM head)

    @property
    def stage(self) -> torch.nn.Module:
        """The first function's stage."""
        return next(iter(self.functions.values()))

    def examples(self) -> dict[str, tuple]:
        """``{function: example}``."""
        return per_function(self.functions, self.example)


def single(name: str, stage: torch.nn.Module, example: tuple, quantize: str | None = None) -> Chunk:
    return Chunk(name, {"forward": stage.eval()}, example, quantize)


@dataclass
class Quantization:
    """An export's quantization: the mode (``none``, ``int8``, ``int4``), the calibration set its gates run
    on (None for ``none``, and for kinds that take no calibration data: their gates run on seeded inputs)
    and the gates, from the options or their defaults (None: the kind has no such part)."""

    mode: str
    calibration: CalibrationSet | None
    vision_gate: Fidelity | None
    language_gate: LanguageFidelity | None
    velocity_gate: VelocityFidelity | None = None
    caption_gate: CaptionFidelity | None = None

    @property
    def on(self) -> bool:
        return self.mode != "none"

    def describe(self) -> dict:
        """The report's and manifest's record: mode, calibration set (with its sha256) when there is one."""
        if not self.on or self.calibration is None:
            return {"mode": self.mode}
        return {"mode": self.mode, "calibration": self.calibration.describe()}


RANDOM_COSINE_NOTE = (
    "random weights: gated all the same - a cosine measures the int8 rounding of these exact weights "
    "(untrained weights have none of a trained model's outlier channels: a checkpoint may score lower)"
)
RANDOM_GUIDANCE_NOTE = (
    "random captions barely move the velocity, so the guided cosine mostly measures rounding noise that the "
    "guidance scale amplifies in that small difference"
)


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
    note = RANDOM_COSINE_NOTE if random_weights else ""
    velocity_note = f"{note}; {RANDOM_GUIDANCE_NOTE}" if random_weights else ""
    velocity_gate = (
        VelocityFidelity(option("gate_velocity_cosine"), velocity_note) if "gate_velocity_cosine" in names else None
    )
    caption_gate = CaptionFidelity(option("gate_caption_cosine"), note) if "gate_caption_cosine" in names else None
    calibration = None
    if mode != "none" and ("calib_images" in names or "calib_prompts" in names):
        calibration = calibration_set(option("calib_images"), option("calib_prompts"))
        if "calib_images" not in names:  # a kind that reads prompts only: its set holds no images
            calibration = replace(calibration, images=[], image_names=[])
    return Quantization(mode, calibration, vision_gate, language_gate, velocity_gate, caption_gate)


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
