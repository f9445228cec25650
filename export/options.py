"""Export options, and which artifact kind a ``model`` makes.

``ExportOptions`` holds every option of every kind; those left ``None`` take the kind's default. An
option given to a model of a kind it does not apply to is refused, never ignored. Messages name
options in backticks (`budget`); the CLI shows them as its flags.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from edgetrim.export.validate import CaptionFidelity, Fidelity, LanguageFidelity, VelocityFidelity
from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError

QUANTIZE_MODES = ("none", "int8", "int4")
VISION_GATES = {  # option -> default, the gate's own (export.validate.Fidelity)
    "gate_overlap": Fidelity.min_overlap,
    "gate_token_cosine": Fidelity.min_cosine,
}
LANGUAGE_GATES = {  # option -> default, the gate's own (export.validate.LanguageFidelity)
    "gate_top1": LanguageFidelity.min_top1,
    "gate_logit_cosine": LanguageFidelity.min_logit_cosine,
    "gate_greedy": LanguageFidelity.min_greedy,
}
VIDEO_GATES = {"gate_velocity_cosine": VelocityFidelity.min_cosine}  # export.validate.VelocityFidelity
TEXT_GATES = {"gate_caption_cosine": CaptionFidelity.min_cosine}  # export.validate.CaptionFidelity
GATES = (*VISION_GATES, *LANGUAGE_GATES, *VIDEO_GATES, *TEXT_GATES)
QUANTIZED_ONLY = (*GATES, "calib_images", "calib_prompts")  # need `quantize` int8/int4
VISION_OPTIONS = {
    "reduce": "hired",  # hired | none
    "budget": "0.2",  # a fraction with a decimal point, an absolute K, or auto (from `calibration`)
    "alpha": 0.5,  # share of K for the full view
    "grid": "2x2",  # AnyRes grid ROWSxCOLS
    "image_size": None,  # None: the model's
    "feature_layer": None,  # LLaVA-style hidden-state index, folders only
    "chunks": None,  # total chunks: embedding, block groups, head (None: one chunk)
    "chunk_mb": None,  # or block groups of at most this many MB
    "quantize": "none",  # none | int8 (vision chunks quantize to int8 only)
    "calib_images": None,  # folder of calibration images (None: the built-in set)
    "calibration": None,  # with `budget` auto: the folder edgetrim calibrate wrote (its report.json)
    **VISION_GATES,
}
LANGUAGE_OPTIONS = {
    "prefill_length": None,  # P; None: K + 64 (vlm) or 64 (language model)
    "prefill_buckets": None,  # smaller prefill lengths "n,m" or "none"; None: K + 32, K + 16 (halved text)
    "max_length": None,  # L; None: P + 64
    "llm_chunks": 1,  # layer groups per language-model graph
    "kv_cache": None,  # coreml: state (iOS 18, the default) | io (iOS 17); other targets: io
    "llm_ops": None,  # onnx: fused (ONNX Runtime contrib ops, the default) | standard (standard ops only)
    "quantize": "none",  # none | int8 | int4 (layers; the head stays int8)
    "calib_prompts": None,  # file of calibration prompts, one a line (None: the built-in set)
    **LANGUAGE_GATES,
}
VLM_OPTIONS = {**VISION_OPTIONS, **LANGUAGE_OPTIONS, "template": None}
VIDEO_OPTIONS = {
    "frames": None,
    "height": None,
    "width": None,
    "cfg_batch": 2,
    "quantize": "none",  # none | int8 (caption, embed and depth chunks; final stays float)
    **VIDEO_GATES,
}
TEXT_OPTIONS = {
    "caption_length": None,
    "quantize": "none",  # none | int8 (block chunks; embedding table and final norm stay float)
    "calib_prompts": None,  # file of calibration prompts, one a line (None: the built-in set)
    **TEXT_GATES,
}
VIDEO_DECODER_OPTIONS = {
    "frames": None,  # the latent geometry, as the denoiser's (latent units)
    "height": None,
    "width": None,
    "micro_batch": None,  # frames per spatial decode (None: the model's micro_batch_size)
    "denoiser": None,  # a video-denoiser artifact whose latents the decoder must decode
}
KIND_OPTIONS = {
    contract.VISION_ENCODER: VISION_OPTIONS,
    contract.VLM: VLM_OPTIONS,
    contract.LANGUAGE_MODEL: LANGUAGE_OPTIONS,
    contract.VIDEO_DENOISER: VIDEO_OPTIONS,
    contract.TEXT_ENCODER: TEXT_OPTIONS,
    contract.VIDEO_DECODER: VIDEO_DECODER_OPTIONS,
}
COMMON = ("target", "model", "out", "atol", "fp16", "validate", "with_llm")
DEFAULT_MODEL = "clip-vit-b16"


@dataclass
class ExportOptions:
    """Every export option; ``None`` (or False for flags) means not given."""

    target: str
    model: str | None = None
    out: Path | None = None
    atol: float = 1e-4
    fp16: bool | None = None  # None: the target's default (fp16 for CoreML, fp32 elsewhere)
    validate: bool = True
    with_llm: bool = False  # a LLaVA folder: export vision + language model (vlm), not the tower alone
    # vision-encoder and vlm
    reduce: str | None = None
    budget: str | None = None
    alpha: float | None = None
    grid: str | None = None
    image_size: int | None = None
    feature_layer: int | None = None
    chunks: int | None = None
    chunk_mb: float | None = None
    calibration: Path | None = None  # `budget` auto: an edgetrim calibrate report folder
    # vlm
    template: str | None = None
    # quantization (every kind): mode, calibration data, fidelity gates
    quantize: str | None = None
    calib_images: Path | None = None
    calib_prompts: Path | None = None
    gate_overlap: float | None = None
    gate_token_cosine: float | None = None
    gate_top1: float | None = None
    gate_logit_cosine: float | None = None
    gate_greedy: float | None = None
    gate_velocity_cosine: float | None = None  # video-denoiser
    gate_caption_cosine: float | None = None  # text-encoder
    # vlm and language-model
    prefill_length: int | None = None
    prefill_buckets: str | None = None
    max_length: int | None = None
    llm_chunks: int | None = None
    kv_cache: str | None = None
    llm_ops: str | None = None
    # video-denoiser
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    cfg_batch: int | None = None
    # text-encoder
    caption_length: int | None = None
    # video-decoder (and frames, height, width)
    micro_batch: int | None = None
    denoiser: Path | None = None

    @property
    def model_spec(self) -> str:
        return self.model or DEFAULT_MODEL

    def given(self) -> dict:
        """The kind-specific options that were set."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in COMMON}
        return {name: v for name, v in values.items() if v is not None and v is not False}

    def value(self, name: str, kind: str):
        """The option as given, else the kind's default."""
        given = getattr(self, name)
        return KIND_OPTIONS[kind][name] if given is None else given

    def recorded(self, kind: str, model: str) -> dict:
        """The options that rebuild this artifact (the manifest's ``export_options``): model, target, fp16,
        and every option of the kind with its value or default (paths as strings)."""
        base = {"model": model, "target": self.target, "fp16": self.fp16}
        values = {name: self.value(name, kind) for name in KIND_OPTIONS[kind]}
        return base | {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def check_applicable(opts: ExportOptions, kind: str) -> None:
    """Refuse every option set that the kind does not take."""
    for name in opts.given():
        if name not in KIND_OPTIONS[kind]:
            takers = [k for k, names in KIND_OPTIONS.items() if name in names]
            raise UserError(
                f"`{name}` does not apply to {kind} models ({opts.model_spec}); it applies to "
                f"{' and '.join(takers)} models: drop it"
            )
    if opts.with_llm and kind != contract.VLM:
        raise UserError(
            f"`with_llm` applies to LLaVA folders (vision + language model); {opts.model_spec} is a {kind}: drop it"
        )


def quantize_mode(opts: ExportOptions, kind: str, modes: tuple[str, ...]) -> str:
    """The requested quantization: one of ``modes`` this kind and target can do, else refused. Gate options
    only go with a quantized export."""
    mode = opts.value("quantize", kind)
    if mode not in QUANTIZE_MODES:
        raise UserError(f"`quantize` {mode!r} is unknown: choose one of {', '.join(QUANTIZE_MODES)}")
    if mode != "none" and mode not in modes:
        can = ", ".join(("none", *modes))
        raise UserError(f"`quantize` {mode} is not available for {kind} models on {opts.target}: it can do {can}")
    if mode == "none":
        given = [n for n in QUANTIZED_ONLY if n in opts.given()]
        if given:
            raise UserError(f"`{given[0]}` applies to quantized exports: pass `quantize` int8 or int4, or drop it")
    for name in GATES:
        value = opts.given().get(name)
        if value is not None and not 0 <= value <= 1:
            raise UserError(f"`{name}` {value} must lie in [0, 1]: it is a share or a cosine")
    return mode


def precision(target: str, fp16: bool | None, coreml_default: str = "fp16") -> str:
    """fp16 (CoreML only) or fp32; CoreML defaults to ``coreml_default``."""
    if fp16 and target != contract.COREML:
        raise UserError(f"`fp16` is supported for `target` coreml only; {target} artifacts are fp32: drop `fp16`")
    if target != contract.COREML:
        return "fp32"
    return coreml_default if fp16 is None else ("fp16" if fp16 else "fp32")


def check_common(opts: ExportOptions) -> None:
    if opts.target not in contract.TARGETS:
        raise UserError(f"`target` {opts.target!r} is unknown: choose one of {', '.join(contract.TARGETS)}")
    if opts.atol <= 0:
        raise UserError(f"`atol` {opts.atol} must be positive: e.g. 1e-4")
