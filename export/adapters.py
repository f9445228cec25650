"""Per-family model knowledge: where the embeddings, blocks, attention projections, CLS and projector live.

A ``VisionTower`` is what the reducer graph needs from any family: ``embed`` (pixels -> tokens),
the encoder ``layers`` up to the feature layer, ``qk`` (a layer's query/key heads for a hidden
state), whether token 0 is a CLS token, and an optional multi-modal projector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from edgetrim.runtime.errors import UserError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass
class VisionSource:
    """Where a tower came from, as reported in the manifest."""

    kind: str  # preset | folder | hub
    name: str
    architecture: str
    random_weights: bool
    config: dict = field(default_factory=dict)


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
        source: VisionSource,
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
                f"--image-size {image_size} is not a multiple of the patch size {self.patch_size}: "
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
            f"pass --feature-layer between {-num_layers} and -1"
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
    source: VisionSource,
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
