"""CLIP / SigLIP / LLaVA vision towers: where the embeddings, blocks, attention projections, CLS and
projector live, how a checkpoint folder's weights load into them, and the presets of the family.

A ``VisionTower`` is what the reducer graph needs from any tower: ``embed`` (pixels -> tokens),
the encoder ``layers`` up to the feature layer, ``qk`` (a layer's query/key heads for a hidden
state), whether token 0 is a CLS token, and an optional multi-modal projector.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgetrim.export.families.checkpoint import KeyMap, Source, load_state, read_config, read_tensors, resolve_folder
from edgetrim.runtime.errors import UserError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


class VisionTower(nn.Module):
    """A ViT encoder cut at its feature layer, plus the projector LLaVA puts after it.

    ``forward``-free: the reducer graph calls ``embed``, the ``layers`` and ``qk`` itself.
    Invariants: ``embed`` returns [B, T, D] with T = N (+1 when ``has_cls``), N = side^2.
    """

    def __init__(
        self,
        family: str,
        patch_embedding: nn.Conv2d,
        position_table: torch.Tensor,
        layers: list[nn.Module],
        *,
        class_embedding: torch.Tensor | None,
        pre_norm: nn.Module | None,
        projector: nn.Module | None,
        native_image_size: int,
        patch_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        source: Source,
    ) -> None:
        super().__init__()
        self.family = family
        self.patch_embedding = patch_embedding
        self.position_table = nn.Parameter(position_table.detach().clone(), requires_grad=False)
        self.class_embedding = (
            nn.Parameter(class_embedding.detach().clone(), requires_grad=False) if class_embedding is not None else None
        )
        self.pre_norm = pre_norm
        self.layers = nn.ModuleList(layers)
        self.projector = projector
        self.image_size = native_image_size
        self.native_image_size = native_image_size
        self.patch_size = patch_size
        self.mean, self.std = mean, std
        self.source = source
        attn = layers[0].self_attn
        self.num_heads = attn.num_heads
        self.head_dim = attn.head_dim

    @property
    def has_cls(self) -> bool:
        return self.class_embedding is not None

    @property
    def side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def hidden_size(self) -> int:
        return self.position_table.shape[-1]

    @property
    def output_size(self) -> int:
        if self.projector is None:
            return self.hidden_size
        return [m for m in self.projector.modules() if isinstance(m, nn.Linear)][-1].out_features

    def set_image_size(self, image_size: int) -> None:
        """Resample the position table (bicubic, as transformers' interpolate_pos_encoding) for a new size."""
        if image_size % self.patch_size:
            raise UserError(
                f"`image_size` {image_size} is not a multiple of the patch size {self.patch_size}: "
                f"use e.g. {image_size // self.patch_size * self.patch_size or self.patch_size}"
            )
        table = self.position_table.data
        old_side = round((table.shape[0] - int(self.has_cls)) ** 0.5)
        new_side = image_size // self.patch_size
        self.image_size = image_size
        if new_side == old_side:
            return
        cls_pos, grid = (table[:1], table[1:]) if self.has_cls else (table[:0], table)
        grid = grid.reshape(1, old_side, old_side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(new_side * new_side, -1)
        self.position_table = nn.Parameter(torch.cat([cls_pos, grid]), requires_grad=False)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] normalized pixels -> [B, T, D] input of layer 0."""
        x = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        if self.class_embedding is not None:
            x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1).to(x.dtype), x], 1)
        x = x + self.position_table
        return self.pre_norm(x) if self.pre_norm is not None else x

    def qk(self, layer: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, D] input of ``layer`` -> its query and key heads, each [B, H, T, d]."""
        x = layer.layer_norm1(hidden)
        b, t, _ = x.shape
        q = layer.self_attn.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = layer.self_attn.k_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        return q, k

    def run_layer(self, layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return layer(hidden, None)

    def patch_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, N, D]: drop CLS (LLaVA's 'default' strategy; SigLIP has none)."""
        return hidden[:, 1:] if self.has_cls else hidden


def feature_layer_index(feature_layer: int, num_layers: int) -> int:
    """LLaVA's ``vision_feature_layer`` indexes hidden_states (embeddings first): -2 -> layer L-2's output."""
    idx = feature_layer + num_layers if feature_layer < 0 else feature_layer - 1
    if not 0 <= idx < num_layers:
        raise UserError(
            f"feature layer {feature_layer} does not exist in a {num_layers}-layer encoder: "
            f"pass `feature_layer` between {-num_layers} and -1"
        )
    return idx


def tower_from_vision_model(
    model: nn.Module,
    *,
    family: str,
    feature_layer: int,
    projector: nn.Module | None,
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
    source: Source,
) -> VisionTower:
    """Build a VisionTower from a transformers ``CLIPVisionModel`` or ``SiglipVisionModel``."""
    cfg = model.config
    layers = list(model.encoder.layers)
    last = feature_layer_index(feature_layer, len(layers))
    emb = model.embeddings
    is_clip = family == "clip"
    if is_clip:
        default_mean, default_std = CLIP_MEAN, CLIP_STD
    else:
        default_mean, default_std = SIGLIP_MEAN, SIGLIP_STD
    return VisionTower(
        family,
        emb.patch_embedding,
        emb.position_embedding.weight,
        layers[: last + 1],
        class_embedding=emb.class_embedding.view(1, 1, -1) if is_clip else None,
        pre_norm=model.pre_layrnorm if is_clip else None,
        projector=projector,
        native_image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        mean=tuple(mean) if mean else default_mean,
        std=tuple(std) if std else default_std,
        source=source,
    ).eval()


# ---------------------------------------------------------------------------------------------- folders

VISION_TYPES = {"clip_vision_model": "clip", "siglip_vision_model": "siglip"}
DUAL_TYPES = {"clip": "clip", "siglip": "siglip"}  # full CLIP/SigLIP checkpoints: their vision half
LLAVA_TYPES = ("llava", "llava_next", "llava_onevision")
# checkpoint prefix -> module prefix, per layout (first match wins)
VISION_KEYS: KeyMap = (("vision_model.", ""), ("", ""))
DUAL_KEYS: KeyMap = (("vision_model.", ""),)
LLAVA_TOWER_KEYS: KeyMap = tuple(
    (prefix, "")
    for prefix in (
        "model.vision_tower.vision_model.",
        "model.vision_tower.",
        "vision_tower.vision_model.",
        "vision_tower.",
    )
)
LLAVA_PROJECTOR_KEYS: KeyMap = (("model.multi_modal_projector.", ""), ("multi_modal_projector.", ""))


def load_folder(folder: Path, feature_layer: int | None, source: Source) -> VisionTower:
    """A CLIP / SigLIP vision model, a full CLIP / SigLIP, or a LLaVA(-NeXT / -OneVision) folder -> tower.

    LLaVA folders: only the vision tower and the projector tensors are read, never the language model.
    """
    cfg = read_config(folder)
    model_type = cfg.get("model_type", "")
    arch = ", ".join(cfg.get("architectures") or []) or model_type
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    projector = None
    if model_type in VISION_TYPES:
        family, vision_cfg, keymap = VISION_TYPES[model_type], config, VISION_KEYS
        layer = -2 if family == "clip" else -1
    elif model_type in DUAL_TYPES:
        family, vision_cfg, keymap = DUAL_TYPES[model_type], config.vision_config, DUAL_KEYS
        layer = -2 if family == "clip" else -1
    elif model_type in LLAVA_TYPES:
        vision_cfg = config.vision_config
        family = VISION_TYPES.get(vision_cfg.model_type)
        if family is None:
            raise UserError(
                f"{folder}: LLaVA vision tower {vision_cfg.model_type!r} is not supported: "
                "edgetrim exports CLIP and SigLIP towers"
            )
        keymap = LLAVA_TOWER_KEYS
        layer = config.vision_feature_layer
        if not isinstance(layer, int) and feature_layer is None:
            raise UserError(
                f"{folder}: vision_feature_layer={layer} (several layers concatenated) is not supported: "
                "pass `feature_layer` N to pick one"
            )
        projector = build_llava_projector(model_type, config)
        load_state(projector, read_tensors(folder, LLAVA_PROJECTOR_KEYS), "projector", folder)
        projector.eval()
    else:
        raise UserError(
            f"{folder}: architecture {arch!r} is not supported: edgetrim exports CLIPVisionModel, "
            "SiglipVisionModel and LLaVA / LLaVA-NeXT / LLaVA-OneVision checkpoints"
        )
    vision_cfg._attn_implementation = "eager"
    model = build_vision_from_config(family, vision_cfg)
    load_state(model, read_tensors(folder, keymap), "vision tower", folder)
    mean, std = read_normalization(folder)
    layer = feature_layer if feature_layer is not None else layer
    source.architecture = arch
    source.config = {"family": family, "model_type": model_type, "feature_layer": layer}
    return tower_from_vision_model(
        model.eval(), family=family, feature_layer=layer, projector=projector, mean=mean, std=std, source=source
    )


def build_vision_from_config(family: str, vision_cfg) -> nn.Module:
    from transformers import CLIPVisionModel, SiglipVisionModel

    cls = CLIPVisionModel if family == "clip" else SiglipVisionModel
    return cls(vision_cfg)


def build_llava_projector(model_type: str, config) -> nn.Module:
    if model_type == "llava":
        from transformers.models.llava.modeling_llava import LlavaMultiModalProjector as Projector
    elif model_type == "llava_next":
        from transformers.models.llava_next.modeling_llava_next import LlavaNextMultiModalProjector as Projector
    else:
        from transformers.models.llava_onevision.modeling_llava_onevision import (
            LlavaOnevisionMultiModalProjector as Projector,
        )
    return Projector(config)


def read_normalization(folder: Path) -> tuple[tuple | None, tuple | None]:
    """image_mean / image_std from the folder's preprocessor_config.json, if it has one."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None, None
    cfg = json.loads(path.read_text())
    mean, std = cfg.get("image_mean"), cfg.get("image_std")
    return (tuple(mean) if mean else None), (tuple(std) if std else None)


# ---------------------------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class VisionPreset:
    """A vision tower's shape; seeded random weights (no hub access on these machines)."""

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


PRESETS: dict[str, VisionPreset] = {
    "tiny-clip": VisionPreset("clip", 64, 4, 4, 128, 64, 8, description="test CLIP ViT, 8x8 patches a view"),
    "tiny-clip-odd": VisionPreset(
        "clip", 64, 3, 4, 128, 56, 8, description="test CLIP ViT, 7x7 patches (uneven cells)"
    ),
    "tiny-siglip": VisionPreset("siglip", 64, 4, 4, 128, 64, 8, feature_layer=-1, description="test SigLIP ViT"),
    "tiny-llava-next": VisionPreset(
        "clip", 64, 4, 4, 128, 64, 8, projector_hidden=96, description="test LLaVA-NeXT tower + projector"
    ),
    "clip-vit-b16": VisionPreset("clip", 768, 12, 12, 3072, 224, 16, description="CLIP ViT-B/16 at 224"),
    "clip-vit-l14-336": VisionPreset(
        "clip", 1024, 24, 16, 4096, 336, 14, description="CLIP ViT-L/14-336 (LLaVA-NeXT's tower)"
    ),
    "siglip-so400m-384": VisionPreset(
        "siglip", 1152, 27, 16, 4304, 384, 14, feature_layer=-1, description="SigLIP so400m/14 at 384"
    ),
    "llava-next-7b-vision": VisionPreset(
        "clip",
        1024,
        24,
        16,
        4096,
        336,
        14,
        projector_hidden=4096,
        description="LLaVA-NeXT-7B tower (CLIP-L/14-336) + projector to 4096",
    ),
}
DEFAULT_PRESET = "clip-vit-b16"
SEED = 0


def peaked_attention_init(model: nn.Module, hidden: int, seed: int) -> None:
    """Redraw every q_proj/k_proj weight with std sqrt(2/D): attention logits of std ~2, peaked as in
    trained encoders (CLIP's init gives near-uniform attention, which would make HiRED a coin toss)."""
    gen = torch.Generator().manual_seed(seed + 1)
    std = math.sqrt(2.0 / hidden)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("q_proj", "k_proj")) and isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)


def build_vision_model(p: VisionPreset) -> nn.Module:
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


def build_preset(name: str, preset: VisionPreset | None = None) -> VisionTower:
    """The tower of preset ``name`` (``preset``: a shape not in PRESETS, e.g. a VLM preset's vision half)."""
    p = preset or PRESETS[name]
    model = build_vision_model(p)
    projector = build_projector(p.hidden, p.projector_hidden) if p.projector_hidden else None
    config = {k: getattr(p, k) for k in ("family", "hidden", "layers", "heads", "image_size", "patch_size")}
    config |= {"feature_layer": p.feature_layer, "projector_hidden": p.projector_hidden}
    source = Source(
        "preset",
        name,
        "LlavaNext vision tower + projector" if projector else type(model).__name__,
        True,
        config,
    )
    return tower_from_vision_model(
        model, family=p.family, feature_layer=p.feature_layer, projector=projector, mean=None, std=None, source=source
    )


def load_tower(spec: str, feature_layer: int | None = None) -> VisionTower:
    """A preset name, a model folder or a hub id -> VisionTower. ``feature_layer`` overrides a folder's."""
    if spec in PRESETS:
        if feature_layer is not None:
            raise UserError("`feature_layer` applies to checkpoint folders; presets fix their feature layer: drop it")
        return build_preset(spec)
    folder, kind = resolve_folder(spec)
    name = str(folder.resolve()) if kind == "folder" else spec
    return load_folder(folder, feature_layer, Source(kind, name, "", False))
