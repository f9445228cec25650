"""Open-Sora 1.2 STDiT3 in plain torch, parameter names as in the published checkpoints, with TDTM.

Parameter layout (``hpcai-tech/OpenSora-STDiT-v3``: ``config.json`` + ``model.safetensors``):
``x_embedder.proj`` (Conv3d, patch (1,2,2)), ``t_embedder.mlp.{0,2}``, ``fps_embedder.mlp.{0,2}``,
``t_block.1`` (adaLN-single, 6*C), ``y_embedder.y_proj.fc{1,2}`` + ``y_embedder.y_embedding`` (null caption),
``rope.freqs``, ``{spatial,temporal}_blocks.i.{attn.qkv, attn.q_norm, attn.k_norm, attn.proj,
cross_attn.q_linear, cross_attn.kv_linear, cross_attn.proj, mlp.fc1, mlp.fc2, scale_shift_table}``,
``final_layer.{linear, scale_shift_table}``.

Inference-only differences from the original: no dropout / drop-path / classifier-free dropout, no
``x_mask`` (image-conditioned frames), no sequence parallelism, fp32. Captions are fixed length L with
a per-token mask (1 keep, 0 pad), which equals the original's packed captions + block-diagonal mask.
Positional-embedding scale uses the video's pixel size (default: latent size x 8, the VAE's factor)
and fps a static value (default 24), both fixed at export.

Shapes: latent ``[B, C_in, T, H, W]``; S = ceil(H/2)*ceil(W/2) tokens per frame; hidden ``[B, T*S, C]``
frame-major; caption ``[B, L, C]``; ``t_mlp`` ``[B, 6*C]``. ``merge=True`` wraps spatial self-attention,
temporal self-attention and cross-attention of every block in TDTM (T must be even).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgetrim.export.families.checkpoint import CONFIG_FILE, Source, save_folder
from edgetrim.export.reducers import tdtm
from edgetrim.runtime.errors import UserError

VAE_FACTOR = 8
DEFAULT_FPS = 24.0
FREQ_DIM = 256


@dataclass(frozen=True)
class STDiT3Config:
    """The published ``config.json`` fields that shape the network (others are ignored)."""

    depth: int = 28
    hidden_size: int = 1152
    num_heads: int = 16
    in_channels: int = 4
    patch_size: tuple[int, int, int] = (1, 2, 2)
    mlp_ratio: float = 4.0
    caption_channels: int = 4096
    model_max_length: int = 300
    pred_sigma: bool = True
    qk_norm: bool = True
    input_sq_size: int = 512

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.pred_sigma else self.in_channels

    @classmethod
    def from_dict(cls, data: dict) -> STDiT3Config:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "patch_size" in values:
            values["patch_size"] = tuple(values["patch_size"])
        return cls(**values)

    def to_dict(self) -> dict:
        """As the published checkpoint writes it (model_type STDiT3)."""
        return {
            "architectures": ["STDiT3"],
            "model_type": "STDiT3",
            **asdict(self),
            "patch_size": list(self.patch_size),
        }


@dataclass(frozen=True)
class Preset:
    config: STDiT3Config
    description: str


PRESETS: dict[str, Preset] = {
    "stdit3-xl-2": Preset(
        STDiT3Config(), "Open-Sora 1.2 STDiT3-XL/2 (depth 28, hidden 1152, 16 heads, T5-XXL 4096 x 300)"
    ),
    "stdit3-mid": Preset(
        STDiT3Config(depth=8, hidden_size=576, num_heads=8),
        "benchmark-sized STDiT3 (depth 8, hidden 576, 8 heads, T5-XXL 4096 x 300 captions)",
    ),
    "stdit3-tiny": Preset(
        STDiT3Config(depth=2, hidden_size=64, num_heads=4, caption_channels=32, model_max_length=8),
        "test-sized STDiT3 (depth 2, hidden 64, 4 heads)",
    ),
}


# ---------------------------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    """LlamaRMSNorm over the last dim (q/k norm per head)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation, written out: ExecuTorch's XNNPACK lowering of ``F.gelu(approximate="tanh")``
    computes the erf form instead (up to 5e-4 apart)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


class Mlp(nn.Module):
    """fc1 -> GELU(tanh) -> fc2 (timm Mlp names)."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))


class RotaryEmbedding(nn.Module):
    """rotary_embedding_torch's RotaryEmbedding(dim): interleaved pairs, positions 0..N-1 on dim -2."""

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., N, d] -> [..., N, d] rotated by position along N."""
        n, d = x.shape[-2:]
        angles = (torch.arange(n, dtype=torch.float32)[:, None] * self.freqs[None]).repeat_interleave(2, dim=-1)
        pairs = x.reshape(*x.shape[:-1], d // 2, 2)
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(x.shape)
        return x * angles.cos() + rotated * angles.sin()


def heads(x: torch.Tensor, count: int) -> torch.Tensor:
    """[B, N, C] -> [B, H, N, C/H]."""
    b, n, c = x.shape
    return x.reshape(b, n, count, c // count).transpose(1, 2)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over [B, H, N, d] x [B, H, L, d]; 3-D batched matmuls (bmm, no
    broadcast expand) so ExecuTorch's XNNPACK partitioner keeps them in few delegate regions."""
    b, h, n, d = q.shape
    logits = torch.bmm((q * d**-0.5).reshape(b * h, n, d), k.reshape(b * h, -1, d).transpose(1, 2))
    logits = logits.reshape(b, h, n, -1)
    if bias is not None:
        logits = logits + bias
    return torch.bmm(logits.softmax(-1).reshape(b * h, n, -1), v.reshape(b * h, -1, d)).reshape(b, h, n, d)


class Attention(nn.Module):
    """Self-attention with qk RMSNorm per head and optional RoPE (temporal blocks)."""

    def __init__(self, dim: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None = None) -> torch.Tensor:
        """[B, N, C] -> [B, N, C]."""
        b, n, c = x.shape
        q, k, v = (heads(part, self.heads) for part in self.qkv(x).split(c, dim=-1))
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        return self.proj(attend(q, k, v).transpose(1, 2).reshape(b, n, c))


class CrossAttention(nn.Module):
    """Queries from video tokens, keys/values from the caption; ``bias`` [B, 1, 1, L] masks padding."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_linear, self.kv_linear, self.proj = nn.Linear(dim, dim), nn.Linear(dim, dim * 2), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """[B, N, C], [B, L, C], [B, 1, 1, L] -> [B, N, C]."""
        b, n, c = x.shape
        q = heads(self.q_linear(x), self.heads)
        k, v = (heads(part, self.heads) for part in self.kv_linear(cond).split(c, dim=-1))
        return self.proj(attend(q, k, v, bias).transpose(1, 2).reshape(b, n, c))


def caption_bias(mask: torch.Tensor) -> torch.Tensor:
    """[B, L] caption mask (1 keep, 0 pad) -> additive attention bias [B, 1, 1, L] (0 or -inf)."""
    return torch.where(mask > 0.5, 0.0, float("-inf"))[:, None, None, :]


class STDiT3Block(nn.Module):
    """adaLN-single transformer block: spatial (attention within a frame) or temporal (across frames)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(dim, heads, qk_norm)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def self_attention(self, x: torch.Tensor, frames: int, rope: RotaryEmbedding | None) -> torch.Tensor:
        """[B, T*S, C] frame-major -> same; spatial: per frame, temporal: per position (with RoPE)."""
        b, n, c = x.shape
        s = n // frames
        if not self.temporal:
            return self.attn(x.reshape(b * frames, s, c)).reshape(b, n, c)
        seq = x.reshape(b, frames, s, c).transpose(1, 2).reshape(b * s, frames, c)
        return self.attn(seq, rope).reshape(b, s, frames, c).transpose(1, 2).reshape(b, n, c)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t_mlp: torch.Tensor,
        bias: torch.Tensor,
        frames: int,
        merge: bool = False,
        rope: RotaryEmbedding | None = None,
    ) -> torch.Tensor:
        """x [B, T*S, C], y [B, L, C], t_mlp [B, 6C], bias [B, 1, 1, L] -> [B, T*S, C]."""
        b, _, c = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t_mlp.reshape(b, 6, c)
        ).chunk(6, dim=1)
        x_m = self.norm1(x) * (1 + scale_msa) + shift_msa
        if merge:
            half = tdtm.check_frames(frames)
            x_m = tdtm.unmerge_frames(self.self_attention(tdtm.merge_frames(x_m, frames), half, rope), half)
            x = x + gate_msa * x_m
            x = x + tdtm.unmerge_frames(self.cross_attn(tdtm.merge_frames(x, frames), y, bias), half)
        else:
            x = x + gate_msa * self.self_attention(x_m, frames, rope)
            x = x + self.cross_attn(x, y, bias)
        return x + gate_mlp * self.mlp(self.norm2(x) * (1 + scale_mlp) + shift_mlp)


class PatchEmbed3D(nn.Module):
    """Conv3d patchify (kernel = stride = patch), computed as reshape + matmul; pads H, W, T up."""

    def __init__(self, patch: tuple[int, int, int], in_channels: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, T, H, W] -> [B, T'*H'*W', C] (frame-major, row-major within a frame)."""
        pt, ph, pw = self.patch
        t, h, w = x.shape[2:]
        pads = (0, -w % pw, 0, -h % ph, 0, -t % pt)
        if any(pads):  # a zero pad exports as an alias node, which coremltools rejects
            x = F.pad(x, pads)
        b, ci, t, h, w = x.shape
        # two <= 6-D permutes (XNNPACK's limit): time patches into channels, then space patches
        x = x.reshape(b, ci, t // pt, pt, h * w).permute(0, 2, 1, 3, 4).reshape(b * t // pt, ci * pt, h, w)
        x = x.reshape(b * t // pt, ci * pt, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5)
        return F.linear(x.reshape(b, -1, ci * pt * ph * pw), self.proj.weight.flatten(1), self.proj.bias)


class TimestepEmbedder(nn.Module):
    """Sinusoidal (cos, sin; 256) embedding of a scalar per sample -> MLP (also the fps embedder)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """[B] -> [B, C]."""
        half = FREQ_DIM // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class CaptionEmbedder(nn.Module):
    """T5 features -> hidden (MLP); ``y_embedding`` [L_max, C_cap] is the null caption for CFG."""

    def __init__(self, caption_channels: int, dim: int, max_length: int) -> None:
        super().__init__()
        self.y_proj = Mlp(caption_channels, dim, dim)
        self.register_buffer("y_embedding", torch.randn(max_length, caption_channels) / caption_channels**0.5)

    def forward(self, caption: torch.Tensor) -> torch.Tensor:
        return self.y_proj(caption)


class T2IFinalLayer(nn.Module):
    def __init__(self, dim: int, patch_volume: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(dim, patch_volume * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[B, N, C], t [B, C] -> [B, N, prod(patch) * C_out]."""
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


def position_embedding_2d(dim: int, h: int, w: int, scale: float, base_size: int) -> torch.Tensor:
    """Open-Sora's PositionEmbedding2D -> [1, h*w, dim]: first half from column, second from row coordinates."""
    half = dim // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(0, half, 2).float() / half))
    grid_h = torch.arange(h) / scale * (base_size / h)
    grid_w = torch.arange(w) / scale * (base_size / w)
    cols, rows = torch.meshgrid(grid_w, grid_h, indexing="ij")

    def sincos(pos: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("i,d->id", pos, inv_freq)
        return torch.cat((torch.sin(out), torch.cos(out)), dim=-1)

    return torch.cat([sincos(cols.t().reshape(-1)), sincos(rows.t().reshape(-1))], dim=-1)[None]


# ---------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class VideoShape:
    """Static latent geometry of an export: batch (2 with CFG), frames, latent height/width, pixel size."""

    batch: int
    frames: int
    height: int
    width: int
    pixel_height: int | None = None
    pixel_width: int | None = None
    fps: float = DEFAULT_FPS

    def tokens(self, patch: tuple[int, int, int]) -> tuple[int, int, int]:
        """(T', H', W') patch grid after padding."""
        return tuple(-(-n // p) for n, p in zip((self.frames, self.height, self.width), patch, strict=True))


class STDiT3(nn.Module):
    def __init__(self, config: STDiT3Config) -> None:
        super().__init__()
        self.config = c = config
        dim, heads = c.hidden_size, c.num_heads
        self.rope = RotaryEmbedding(dim // heads)
        self.x_embedder = PatchEmbed3D(c.patch_size, c.in_channels, dim)
        self.t_embedder = TimestepEmbedder(dim)
        self.fps_embedder = TimestepEmbedder(dim)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.y_embedder = CaptionEmbedder(c.caption_channels, dim, c.model_max_length)
        self.spatial_blocks = nn.ModuleList(
            STDiT3Block(dim, heads, c.mlp_ratio, c.qk_norm, temporal=False) for _ in range(c.depth)
        )
        self.temporal_blocks = nn.ModuleList(
            STDiT3Block(dim, heads, c.mlp_ratio, c.qk_norm, temporal=True) for _ in range(c.depth)
        )
        self.final_layer = T2IFinalLayer(dim, math.prod(c.patch_size), c.out_channels)

    def pos_embed(self, shape: VideoShape) -> torch.Tensor:
        """[1, S, C] for the static latent size (scale from the pixel size, as the original)."""
        _, h, w = shape.tokens(self.config.patch_size)
        ph = shape.pixel_height or shape.height * VAE_FACTOR
        pw = shape.pixel_width or shape.width * VAE_FACTOR
        scale = (ph * pw) ** 0.5 / self.config.input_sq_size
        return position_embedding_2d(self.config.hidden_size, h, w, scale, round((h * w) ** 0.5))

    def embed_time(self, timestep: torch.Tensor, fps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """[B] -> t [B, C] (final layer), t_mlp [B, 6C] (blocks)."""
        t = self.t_embedder(timestep) + self.fps_embedder(torch.full_like(timestep, fps))
        return t, self.t_block(t)

    def embed_video(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """[B, C_in, T, H, W] -> [B, T*S, C]."""
        tokens = self.x_embedder(x)
        b, n, c = tokens.shape
        s = pos.shape[1]
        return (tokens.reshape(b, n // s, s, c) + pos[:, None]).reshape(b, n, c)

    def depth_step(
        self,
        i: int,
        x: torch.Tensor,
        y: torch.Tensor,
        t_mlp: torch.Tensor,
        bias: torch.Tensor,
        frames: int,
        merge: bool,
    ) -> torch.Tensor:
        """Spatial block i then temporal block i."""
        x = self.spatial_blocks[i](x, y, t_mlp, bias, frames, merge)
        return self.temporal_blocks[i](x, y, t_mlp, bias, frames, merge, self.rope)

    def unpatchify(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """[B, T'*H'*W', pt*ph*pw*C_out] -> [B, C_out, T, H, W] (padding cropped)."""
        nt, nh, nw = shape.tokens(self.config.patch_size)
        pt, ph, pw = self.config.patch_size
        co, b = self.config.out_channels, x.shape[0]
        # features are (pt, ph, pw, C_out); three <= 6-D permutes (XNNPACK's limit) instead of one 8-D
        x = x.reshape(b * nt * nh, nw, pt * ph, pw, co).permute(0, 4, 2, 1, 3)
        x = x.reshape(b * nt, nh, co, pt, ph, nw * pw).permute(0, 2, 3, 1, 4, 5)
        x = x.reshape(b, nt, co, pt, nh * ph * nw * pw).permute(0, 2, 1, 3, 4)
        x = x.reshape(b, co, nt * pt, nh * ph, nw * pw)
        if x.shape[2:] == (shape.frames, shape.height, shape.width):  # no padding: a no-op slice is an alias node
            return x
        return x[:, :, : shape.frames, : shape.height, : shape.width]

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        caption: torch.Tensor,
        caption_mask: torch.Tensor | None = None,
        merge: bool = False,
        pixel_size: tuple[int, int] | None = None,
        fps: float = DEFAULT_FPS,
    ) -> torch.Tensor:
        """x [B, C_in, T, H, W], timestep [B], caption [B, L, C_cap], mask [B, L] -> [B, C_out, T, H, W]."""
        b, _, frames, h, w = x.shape
        shape = VideoShape(b, frames, h, w, *(pixel_size or (None, None)), fps=fps)
        t, t_mlp = self.embed_time(timestep, fps)
        y = self.y_embedder(caption)
        mask = caption_mask if caption_mask is not None else torch.ones(caption.shape[:2])
        bias = caption_bias(mask)
        hidden = self.embed_video(x, self.pos_embed(shape))
        tokens_t = shape.tokens(self.config.patch_size)[0]
        for i in range(self.config.depth):
            hidden = self.depth_step(i, hidden, y, t_mlp, bias, tokens_t, merge)
        return self.unpatchify(self.final_layer(hidden, t), shape)


# ---------------------------------------------------------------------------------------------- loading


def init_random(model: STDiT3, seed: int = 0) -> STDiT3:
    """Seeded random weights for every tensor (no zero-init, so every block changes its input)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name == "rope.freqs":
                continue
            if name.endswith("norm.weight"):
                tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=gen))
            elif tensor.ndim >= 2 and "scale_shift_table" not in name:
                fan_in = math.prod(tensor.shape[1:])
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / fan_in**0.5)
            else:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
    return model


def build_preset(name: str, seed: int = 0) -> STDiT3:
    return init_random(STDiT3(PRESETS[name].config), seed).eval()


def save_checkpoint(model: STDiT3, folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in the published layout."""
    return save_folder(model.config.to_dict(), model.state_dict(), folder)


def load_checkpoint(folder: Path) -> STDiT3:
    """A folder with the published ``config.json`` and ``*.safetensors`` (one file or shards) -> STDiT3."""
    from safetensors.torch import load_file

    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise UserError(f"{folder} has no {CONFIG_FILE}: pass an STDiT3 checkpoint folder (config.json + safetensors)")
    data = json.loads(config_path.read_text())
    if data.get("model_type", "STDiT3") != "STDiT3":
        raise UserError(f"{config_path} has model_type {data.get('model_type')!r}, not STDiT3: pass an STDiT3 folder")
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise UserError(f"{folder} has no .safetensors weights: save the state dict as model.safetensors")
    state = {k: v.float() for shard in shards for k, v in load_file(str(shard)).items()}
    model = STDiT3(STDiT3Config.from_dict(data))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state) - {"rope.freqs"})  # rope.freqs is a fixed function of head_dim
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{folder} is not an STDiT3 checkpoint for its config: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    wrong = [k for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        raise UserError(
            f"{folder}: {wrong[0]} has shape {list(state[wrong[0]].shape)}, the config implies "
            f"{list(expected[wrong[0]].shape)}: the config.json does not match the weights"
        )
    model.load_state_dict(state, strict=False)
    return model.eval()


def load_stdit3(spec: str) -> tuple[STDiT3, Source]:
    """A preset name (seeded random weights) or a local checkpoint folder -> (model, source)."""
    if spec in PRESETS:
        model = build_preset(spec)
        return model, Source("preset", spec, "STDiT3", True, model.config.to_dict())
    path = Path(spec).expanduser()
    if path.is_dir():
        model = load_checkpoint(path)
        return model, Source("folder", str(path.resolve()), "STDiT3", False, model.config.to_dict())
    raise UserError(f"unknown STDiT3 model {spec!r}: choose one of {', '.join(PRESETS)} or a checkpoint folder")
