"""Built-in presets: real architecture shapes, seeded random weights (no hub access on these machines).

Random weights are re-drawn with one twist: query/key projections get std sqrt(2/D) so that
attention is peaked as in trained encoders (CLIP's init gives near-uniform attention, which
would make HiRED's choices a coin toss). Every report says the weights are random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from edgetrim.export.adapters import VisionSource, VisionTower, tower_from_vision_model


@dataclass(frozen=True)
class Preset:
    family: str  # clip | siglip
    hidden: int
    layers: int
    heads: int
    intermediate: int
    image_size: int
    patch_size: int
    feature_layer: int = -2
    projector_hidden: int | None = None  # LLaVA 2-layer MLP projector width (None: no projector)
    description: str = ""


PRESETS: dict[str, Preset] = {
    "tiny-clip": Preset("clip", 64, 4, 4, 128, 64, 8, description="test-sized CLIP ViT, 8x8 patches per view"),
    "tiny-clip-odd": Preset(
        "clip", 64, 3, 4, 128, 56, 8, description="test-sized CLIP ViT, 7x7 patches (uneven cells)"
    ),
    "tiny-siglip": Preset("siglip", 64, 4, 4, 128, 64, 8, feature_layer=-1, description="test-sized SigLIP ViT"),
    "tiny-llava-next": Preset(
        "clip",
        64,
        4,
        4,
        128,
        64,
        8,
        projector_hidden=96,
        description="test-sized LLaVA-NeXT vision tower + projector",
    ),
    "clip-vit-b16": Preset("clip", 768, 12, 12, 3072, 224, 16, description="CLIP ViT-B/16 at 224"),
    "clip-vit-l14-336": Preset(
        "clip", 1024, 24, 16, 4096, 336, 14, description="CLIP ViT-L/14-336 (LLaVA-NeXT's tower)"
    ),
    "siglip-so400m-384": Preset(
        "siglip",
        1152,
        27,
        16,
        4304,
        384,
        14,
        feature_layer=-1,
        description="SigLIP so400m/14 at 384 (LLaVA-OneVision)",
    ),
    "llava-next-7b-vision": Preset(
        "clip",
        1024,
        24,
        16,
        4096,
        336,
        14,
        projector_hidden=4096,
        description="LLaVA-NeXT-7B vision tower (CLIP-L/14-336) + 2-layer projector to 4096",
    ),
}
DEFAULT_PRESET = "clip-vit-b16"
SEED = 0


def peaked_attention_init(model: nn.Module, hidden: int, seed: int) -> None:
    """Redraw every q_proj/k_proj weight with std sqrt(2/D): attention logits of std ~2."""
    gen = torch.Generator().manual_seed(seed + 1)
    std = math.sqrt(2.0 / hidden)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("q_proj", "k_proj")) and isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)


def build_vision_model(p: Preset) -> nn.Module:
    """The transformers vision model of a preset's shape, with seeded random weights."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    kwargs = dict(
        hidden_size=p.hidden,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        intermediate_size=p.intermediate,
        image_size=p.image_size,
        patch_size=p.patch_size,
    )
    torch.manual_seed(SEED)
    if p.family == "clip":
        model = CLIPVisionModel(CLIPVisionConfig(**kwargs))
    else:
        model = SiglipVisionModel(SiglipVisionConfig(**kwargs, vision_use_head=False))
    peaked_attention_init(model, p.hidden, SEED)
    return model.eval()


def build_projector(vision_hidden: int, width: int) -> nn.Module:
    """LLaVA-NeXT's projector (linear, GELU, linear) with seeded random weights."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, Qwen2Config
    from transformers.models.llava_next.modeling_llava_next import LlavaNextMultiModalProjector

    cfg = LlavaNextConfig(
        vision_config=CLIPVisionConfig(hidden_size=vision_hidden, num_attention_heads=1),
        text_config=Qwen2Config(hidden_size=width, num_attention_heads=1, num_key_value_heads=1),
    )
    torch.manual_seed(SEED + 2)
    return LlavaNextMultiModalProjector(cfg).eval()


def build_preset(name: str, preset: Preset | None = None) -> VisionTower:
    """The tower of preset ``name`` (``preset``: a shape not in PRESETS, e.g. a VLM preset's vision half)."""
    p = preset or PRESETS[name]
    model = build_vision_model(p)
    projector = build_projector(p.hidden, p.projector_hidden) if p.projector_hidden else None
    source = VisionSource(
        kind="preset",
        name=name,
        architecture=("LlavaNext vision tower + projector" if projector else type(model).__name__),
        random_weights=True,
        config={
            "family": p.family,
            "hidden": p.hidden,
            "layers": p.layers,
            "heads": p.heads,
            "image_size": p.image_size,
            "patch_size": p.patch_size,
            "feature_layer": p.feature_layer,
            "projector_hidden": p.projector_hidden,
        },
    )
    return tower_from_vision_model(
        model,
        family=p.family,
        feature_layer=p.feature_layer,
        projector=projector,
        mean=None,
        std=None,
        source=source,
    )
