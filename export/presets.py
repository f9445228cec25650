"""The preset registry (every kind, real architecture shapes, seeded random weights), and which artifact
kind a ``model`` makes: a preset name, a checkpoint folder or a Hugging Face Hub id.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from edgetrim.export.families import decoder, stdit3, t5, vae, vision
from edgetrim.export.families.checkpoint import is_hub_id, read_config, resolve_folder
from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError


@dataclass(frozen=True)
class VlmPreset:
    """A LLaVA-style VLM: a vision tower + projector (width = the language model's) and a decoder preset."""

    vision: vision.VisionPreset
    language_model: str  # a decoder preset
    description: str
    template: str = decoder.CHATML


VLM_PRESETS: dict[str, VlmPreset] = {
    "tiny-vlm": VlmPreset(
        replace(vision.PRESETS["tiny-llava-next"], projector_hidden=64),
        "tiny-qwen2",
        "test LLaVA-NeXT: tiny CLIP (2x2 at 64) + projector + tiny Qwen2",
    ),
    "llava-next-small": VlmPreset(
        replace(vision.PRESETS["clip-vit-b16"], projector_hidden=896),
        "qwen2-0.5b",
        "CLIP ViT-B/16 at 224 (2x2 + full view) + projector + Qwen2-0.5B",
    ),
    "llava-onevision-0.5b": VlmPreset(
        replace(vision.PRESETS["siglip-so400m-384"], projector_hidden=896),
        "qwen2-0.5b",
        "LLaVA-OneVision-0.5B: SigLIP so400m/14 at 384 + Qwen2-0.5B",
    ),
}


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str
    description: str


def t5_description(config: dict, length: int) -> str:
    return f"T5 encoder, {config['num_layers']} layers, d_model {config['d_model']}, {length}-token captions"


PRESETS: dict[str, Preset] = {
    **{n: Preset(n, contract.VISION_ENCODER, p.description) for n, p in vision.PRESETS.items()},
    **{n: Preset(n, contract.VLM, p.description) for n, p in VLM_PRESETS.items()},
    **{n: Preset(n, contract.LANGUAGE_MODEL, p.description) for n, p in decoder.PRESETS.items()},
    **{n: Preset(n, contract.VIDEO_DENOISER, p.description) for n, p in stdit3.PRESETS.items()},
    **{n: Preset(n, contract.TEXT_ENCODER, t5_description(*p)) for n, p in t5.PRESETS.items()},
    **{n: Preset(n, contract.VIDEO_DECODER, p.description) for n, p in vae.PRESETS.items()},
}


def folder_kind(folder: Path, with_llm: bool) -> str:
    """The kind a checkpoint folder makes, from its config.json."""
    config = read_config(folder)
    model_type = config.get("model_type", "")
    if model_type in vision.LLAVA_TYPES:
        return contract.VLM if with_llm else contract.VISION_ENCODER
    if model_type in (*vision.VISION_TYPES, *vision.DUAL_TYPES):
        return contract.VISION_ENCODER
    if model_type in decoder.CAUSAL_LM_TYPES:
        return contract.LANGUAGE_MODEL
    if model_type == "t5":
        return contract.TEXT_ENCODER
    if model_type == "STDiT3" or "STDiT3" in (config.get("architectures") or []):
        return contract.VIDEO_DENOISER
    if model_type == vae.MODEL_TYPE or vae.MODEL_TYPE in (config.get("architectures") or []):
        return contract.VIDEO_DECODER
    arch = ", ".join(config.get("architectures") or []) or model_type
    raise UserError(
        f"{folder}: architecture {arch!r} is not supported: edgetrim exports CLIPVisionModel, SiglipVisionModel, "
        "LLaVA / LLaVA-NeXT / LLaVA-OneVision, Qwen2 / Llama / Mistral causal LMs, T5 encoders, STDiT3 and "
        "Open-Sora VAEs (VideoAutoencoderPipeline)"
    )


def kind_of(spec: str, with_llm: bool = False) -> str:
    """The artifact kind ``spec`` makes (a hub id is downloaded here, once, into the hub cache)."""
    if spec in PRESETS:
        return PRESETS[spec].kind
    path = Path(spec).expanduser()
    if path.exists() or is_hub_id(spec) or "/" in spec or spec.startswith((".", "~")):
        folder, _ = resolve_folder(spec)
        return folder_kind(folder, with_llm)
    raise UserError(f"unknown preset {spec!r}: choose one of {', '.join(PRESETS)}, a model folder or a hub id")
