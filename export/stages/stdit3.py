"""Open-Sora 1.2 STDiT3 as a ``video-denoiser``'s stages (CI-DL granularity).

``caption`` (caption embedder, once per prompt), ``embed`` (timestep + 3-D patch embedding), one
depth step per chunk (spatial + temporal block) in two functions sharing its weights, ``plain`` and
``tdtm`` (frame pairs merged around self-/cross-attention, MLP at full T), and ``final``.

Depth-step I/O (static): ``hidden_XX`` [B, T*S, C], ``t_mlp`` [B, 6C], ``caption`` [B, L, C],
``caption_mask`` [B, L] (1 keep, 0 pad) -> ``hidden_{XX+1}`` [B, T*S, C].
"""

from __future__ import annotations

import torch

from edgetrim.export.families.stdit3 import STDiT3, VideoShape, caption_bias
from edgetrim.export.reducers import tdtm
from edgetrim.export.stages.base import Stage
from edgetrim.runtime import contract
from edgetrim.runtime.contract import hidden_name

FUNCTIONS = (contract.PLAIN, contract.TDTM)


class CaptionStage(Stage):
    """caption_embeds [B, L, C_cap] -> caption [B, L, C] (once per prompt, not per denoising step)."""

    def __init__(self, model: STDiT3) -> None:
        super().__init__()
        self.y_embedder = model.y_embedder
        self.input_names, self.output_names = [contract.CAPTION_EMBEDS], [contract.CAPTION_TOKENS]

    def forward(self, caption_embeds: torch.Tensor) -> torch.Tensor:
        return self.y_embedder(caption_embeds)


class EmbedStage(Stage):
    """latent [B, C_in, T, H, W], timestep [B] -> hidden_00 [B, T*S, C], t [B, C], t_mlp [B, 6C]."""

    def __init__(self, model: STDiT3, shape: VideoShape) -> None:
        super().__init__()
        self.model, self.fps = model, shape.fps
        self.register_buffer("pos", model.pos_embed(shape), persistent=False)
        self.input_names = [contract.LATENT, contract.TIMESTEP]
        self.output_names = [hidden_name(0), contract.TIME, contract.TIME_MLP]

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor):
        t, t_mlp = self.model.embed_time(timestep, self.fps)
        return self.model.embed_video(latent, self.pos), t, t_mlp


class DepthStage(Stage):
    """One depth step (spatial + temporal block ``step``), plain or TDTM (``merge``, static).

    hidden_i [B, T*S, C], t_mlp [B, 6C], caption [B, L, C], caption_mask [B, L] -> hidden_{i+1}.
    """

    def __init__(self, model: STDiT3, step: int, frames: int, merge: bool) -> None:
        super().__init__()
        if merge:
            tdtm.check_frames(frames)
        self.step, self.frames, self.merge = step, frames, merge
        self.spatial, self.temporal, self.rope = model.spatial_blocks[step], model.temporal_blocks[step], model.rope
        self.input_names = [hidden_name(step), contract.TIME_MLP, contract.CAPTION_TOKENS, contract.CAPTION_MASK]
        self.output_names = [hidden_name(step + 1)]

    def forward(self, hidden: torch.Tensor, t_mlp: torch.Tensor, caption: torch.Tensor, caption_mask: torch.Tensor):
        bias = caption_bias(caption_mask)
        hidden = self.spatial(hidden, caption, t_mlp, bias, self.frames, self.merge)
        return self.temporal(hidden, caption, t_mlp, bias, self.frames, self.merge, self.rope)


class FinalStage(Stage):
    """hidden_D [B, T*S, C], t [B, C] -> velocity [B, C_out, T, H, W] (C_out = 2*C_in with pred_sigma)."""

    def __init__(self, model: STDiT3, shape: VideoShape) -> None:
        super().__init__()
        self.model, self.shape = model, shape
        self.input_names, self.output_names = [hidden_name(model.config.depth), contract.TIME], [contract.VELOCITY]

    def forward(self, hidden: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model.unpatchify(self.model.final_layer(hidden, t), self.shape)


def depth_stages(model: STDiT3, step: int, frames: int) -> dict[str, DepthStage]:
    """Both functions of depth step ``step``; they share the block modules (same parameters)."""
    return {f: DepthStage(model, step, frames, merge=f == contract.TDTM).eval() for f in FUNCTIONS}


def depth_example(model: STDiT3, shape: VideoShape, caption_length: int | None = None, seed: int = 0):
    """Realistic example inputs of a depth chunk: the embed stage run on a seeded random latent and caption.

    Returns (hidden [B, T*S, C], t_mlp [B, 6C], caption [B, L, C], caption_mask [B, L]); the mask keeps
    the first 3/4 of the caption (the rest is padding).
    """
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    length = caption_length or c.model_max_length
    latent = torch.randn(shape.batch, c.in_channels, shape.frames, shape.height, shape.width, generator=gen)
    timestep = torch.full((shape.batch,), 700.0)
    with torch.no_grad():
        _, t_mlp = model.embed_time(timestep, shape.fps)
        hidden = model.embed_video(latent, model.pos_embed(shape))
        caption = model.y_embedder(torch.randn(shape.batch, length, c.caption_channels, generator=gen))
    mask = torch.zeros(shape.batch, length)
    mask[:, : max(1, 3 * length // 4)] = 1.0
    return hidden.contiguous(), t_mlp.contiguous(), caption.contiguous(), mask


def depth_step_flops(model: STDiT3, shape: VideoShape, merge: bool, caption_length: int | None = None) -> int:
    """Multiply-adds x 2 of one depth step (spatial + temporal block) at ``shape``; TDTM halves the frames
    seen by self-attention and cross-attention (queries), not the MLP nor the caption's keys/values."""
    c = model.config
    dim, length = c.hidden_size, caption_length or c.model_max_length
    frames, h, w = shape.tokens(c.patch_size)
    s = h * w
    seen = frames // 2 if merge else frames
    n, m = frames * s, seen * s
    linear = 2 * m * dim * dim * 4 + 2 * m * dim * dim * 2 + 2 * length * dim * 2 * dim + 2 * n * dim * 8 * dim
    cross = 4 * m * length * dim
    spatial = linear + cross + 4 * seen * s * s * dim
    temporal = linear + cross + 4 * s * seen * seen * dim
    return shape.batch * (spatial + temporal)
