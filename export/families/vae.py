"""Open-Sora 1.2 video autoencoder, decode side, in plain torch with the published parameter names.

Published layout (``hpcai-tech/OpenSora-VAE-v1.2``: ``config.json`` + ``model.safetensors`` of Open-Sora's
``VideoAutoencoderPipeline``, opensora/models/vae/vae.py):

- ``scale``, ``shift`` [1, C, 1, 1, 1]: the latent normalization (config.json ``scale``/``shift``);
- ``temporal_vae.`` (VAE_Temporal_SD, opensora/models/vae/vae_temporal.py): ``post_quant_conv.conv``,
  ``decoder.{conv1.conv, res_blocks.j, block_res_blocks.i.j, conv_blocks.i.conv, norm1, conv_out.conv}``, a
  ResBlock being ``{norm1, conv1.conv, norm2, conv2.conv, conv3.conv}``;
- ``spatial_vae.module.`` (diffusers ``AutoencoderKL``, the SDXL VAE of PixArt-Sigma): ``post_quant_conv``,
  ``decoder.{conv_in, mid_block.{resnets.j, attentions.0.{group_norm, to_q, to_k, to_v, to_out.0}},
  up_blocks.i.{resnets.j.{norm1, conv1, norm2, conv2, conv_shortcut}, upsamplers.0.conv}, conv_norm_out, conv_out}``;
- encoder-side tensors (``ENCODER_PREFIXES``), which loading skips by name.

Decode (``VideoAutoencoderPipeline.decode``): z [B, C, T_lat, h, w] -> ``z * scale + shift`` -> the temporal VAE
on each micro-frame chunk of 5 latent frames (17 video frames; a shorter last chunk makes the rest) -> spatial
latents [B, C, T, h, w] -> ``/ scaling_factor`` -> the 2-D decoder on micro-batches of frames -> video
[B, 3, T, 8h, 8w], about [-1, 1] (not clamped). Inference only, fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgetrim.export.families.checkpoint import (
    KeyMap,
    Source,
    read_config,
    read_tensors,
    save_folder,
    weight_files,
)
from edgetrim.runtime.errors import UserError

MODEL_TYPE = "VideoAutoencoderPipeline"
TEMPORAL_TYPE = "VAE_Temporal_SD"
SPATIAL_TYPE = "VideoAutoencoderKL"
SPATIAL_SOURCE = "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers"
NORMALIZATION = ("scale", "shift")  # pipeline buffers: from the checkpoint when present, else from config.json
DECODER_KEYS: KeyMap = tuple(
    (p, p)
    for p in (
        *NORMALIZATION,
        "temporal_vae.post_quant_conv.",
        "temporal_vae.decoder.",
        "spatial_vae.module.post_quant_conv.",
        "spatial_vae.module.decoder.",
    )
)
ENCODER_PREFIXES = (
    "temporal_vae.encoder.",
    "temporal_vae.quant_conv.",
    "spatial_vae.module.encoder.",
    "spatial_vae.module.quant_conv.",
)


# config.json argument names (Open-Sora's VAE_Temporal, diffusers' AutoencoderKL) -> VAEConfig fields
TEMPORAL_FIELDS = {
    "in_out_channels": "latent_channels",
    "filters": "temporal_filters",
    "num_res_blocks": "temporal_res_blocks",
    "channel_multipliers": "temporal_multipliers",
    "temporal_downsample": "temporal_downsample",
    "num_groups": "temporal_groups",
}
SPATIAL_FIELDS = {
    "latent_channels": "latent_channels",
    "block_out_channels": "spatial_channels",
    "layers_per_block": "spatial_layers",
    "norm_num_groups": "spatial_groups",
    "out_channels": "out_channels",
    "scaling_factor": "scaling_factor",
}
BATCH_FIELD = {"micro_batch_size": "micro_batch_size"}  # always written (published)


@dataclass(frozen=True)
class VAEConfig:
    """Shape of the pipeline. Defaults: OpenSoraVAE_V1_2 (VAE_Temporal_SD + the SDXL VAE, micro-frames 17,
    micro-batch 4, scaling 0.18215 - the SD factor Open-Sora 1.2 was trained with, not SDXL's 0.13025)."""

    latent_channels: int = 4
    temporal_filters: int = 128
    temporal_res_blocks: int = 4
    temporal_multipliers: tuple[int, ...] = (1, 2, 2, 4)
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    temporal_groups: int = 32
    spatial_channels: tuple[int, ...] = (128, 256, 512, 512)
    spatial_layers: int = 2
    spatial_groups: int = 32
    out_channels: int = 3
    scaling_factor: float = 0.18215
    scale: tuple[float, ...] = (3.85, 2.32, 2.33, 3.06)
    shift: tuple[float, ...] = (-0.10, 0.34, 0.27, 0.98)
    micro_frame_size: int = 17
    micro_batch_size: int = 4

    @property
    def time_factor(self) -> int:
        """Video frames per latent frame of the temporal VAE (4)."""
        return 2 ** sum(self.temporal_downsample)

    @property
    def space_factor(self) -> int:
        """Pixels per latent pixel of the spatial VAE (8)."""
        return 2 ** (len(self.spatial_channels) - 1)

    @property
    def micro_latent_frames(self) -> int:
        """Latent frames of one micro-frame chunk (17 video frames -> 5)."""
        return -(-self.micro_frame_size // self.time_factor)

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a ``num_frames`` video (the pipeline's ``get_latent_size``: 17 -> 5, 51 -> 15, 1 -> 1)."""
        full, rest = divmod(num_frames, self.micro_frame_size)
        return full * self.micro_latent_frames + -(-rest // self.time_factor)

    def video_frames(self, latent_frames: int) -> int:
        """The default video length of ``latent_frames``: 17 per full chunk, ``factor * (k - 1) + 1`` for a last
        chunk of k latent frames (the length whose causal padding equals a full chunk's)."""
        full, rest = divmod(latent_frames, self.micro_latent_frames)
        return full * self.micro_frame_size + (self.time_factor * (rest - 1) + 1 if rest else 0)

    @classmethod
    def from_dict(cls, data: dict) -> VAEConfig:
        """From the published config.json; architecture fields beyond it (smaller test models) are read from
        ``vae_temporal`` / ``vae_2d`` under Open-Sora's and diffusers' argument names."""
        temporal, spatial = data.get("vae_temporal") or {}, data.get("vae_2d") or {}
        if temporal.get("type", TEMPORAL_TYPE) != TEMPORAL_TYPE:
            raise UserError(
                f"vae_temporal type {temporal.get('type')!r} is not {TEMPORAL_TYPE}: only that decoder is built"
            )
        values = {k: data[k] for k in ("scale", "shift", "micro_frame_size") if data.get(k) is not None}
        for section, names in ((temporal, TEMPORAL_FIELDS), (spatial, {**SPATIAL_FIELDS, **BATCH_FIELD})):
            for key, name in names.items():
                if section.get(key) is None:
                    continue
                if values.setdefault(name, section[key]) != section[key]:
                    raise UserError(
                        f"vae_2d {key} {section[key]} != vae_temporal's {values[name]}: the two VAEs do not chain"
                    )
        for key in NORMALIZATION:  # the pipeline also takes one number for every channel
            if isinstance(values.get(key), int | float):
                values[key] = [values[key]] * values.get("latent_channels", cls.latent_channels)
        tuples = {f.name for f in fields(cls) if "tuple" in str(f.type)}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})

    def to_dict(self) -> dict:
        """As the published config.json; architecture fields only where they differ from Open-Sora 1.2's."""
        default = VAEConfig()

        def changed(names: dict[str, str]) -> dict:
            return {k: _json(getattr(self, n)) for k, n in names.items() if getattr(self, n) != getattr(default, n)}

        return {
            "architectures": [MODEL_TYPE],
            "model_type": MODEL_TYPE,
            "cal_loss": False,
            "freeze_vae_2d": False,
            "from_pretrained": None,
            "micro_frame_size": self.micro_frame_size,
            "scale": list(self.scale),
            "shift": list(self.shift),
            "vae_2d": {
                "type": SPATIAL_TYPE,
                "from_pretrained": SPATIAL_SOURCE,
                "subfolder": "vae",
                "micro_batch_size": self.micro_batch_size,
                **changed(SPATIAL_FIELDS),
            },
            "vae_temporal": {"type": TEMPORAL_TYPE, "from_pretrained": None, **changed(TEMPORAL_FIELDS)},
        }


def _json(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Preset:
    config: VAEConfig
    description: str


PRESETS: dict[str, Preset] = {
    "opensora-vae-1.2": Preset(
        VAEConfig(),
        "Open-Sora 1.2 VAE decoder (VAE_Temporal_SD 128x(1,2,2,4) + SDXL VAE decoder (128,256,512,512), 4 latent ch)",
    ),
    "tiny-vae": Preset(
        VAEConfig(
            temporal_filters=8,
            temporal_res_blocks=1,
            temporal_groups=4,
            spatial_channels=(8, 16, 32, 32),
            spatial_layers=1,
            spatial_groups=4,
        ),
        "test-sized Open-Sora 1.2 VAE decoder (same blocks, widths 8..32, one res block per level)",
    ),
}


# ---------------------------------------------------------------------------------------------- temporal VAE


class CausalConv3d(nn.Module):
    """Conv3d (stride 1) causal in time: k_t - 1 zero frames in front, k // 2 on each side in space."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool = True) -> None:
        super().__init__()
        half = kernel // 2
        self.padding = (half, half, half, half, kernel - 1, 0)
        self.conv = nn.Conv3d(cin, cout, kernel, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, T, H, W] -> [B, C_out, T, H, W]."""
        if any(self.padding):  # a zero pad exports as an alias node, which coremltools rejects
            x = F.pad(x, self.padding)
        return self.conv(x)


class TemporalResBlock(nn.Module):
    """GroupNorm -> SiLU -> causal conv, twice, plus the input (1x1x1 conv ``conv3`` when the width changes)."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), CausalConv3d(cin, cout, 3, bias=False)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), CausalConv3d(cout, cout, 3, bias=False)
        self.conv3 = CausalConv3d(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (self.conv3(x) if self.conv3 is not None else x)


def depth_to_time(x: torch.Tensor, factor: int) -> torch.Tensor:
    """einops ``B (C ts) T H W -> B C (T ts) H W``: [B, C*f, T, H, W] -> [B, C, T*f, H, W]."""
    b, cf, t, h, w = x.shape
    return x.reshape(b, cf // factor, factor, t, h * w).transpose(2, 3).reshape(b, cf // factor, t * factor, h, w)


class TemporalDecoder(nn.Module):
    """MAGVIT-v2 style decoder: conv1 + res_blocks at the widest level, then levels L-1 .. 0, each res blocks
    then (levels > 0) a causal conv to ``stride`` x channels and depth-to-time (x2 frames where the encoder
    downsampled), then GroupNorm -> SiLU -> conv_out. Level i is ``block_res_blocks.i`` and ``conv_blocks.{i-1}``."""

    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        widths = [c.temporal_filters * m for m in c.temporal_multipliers]
        self.strides = [1, *(2 if down else 1 for down in c.temporal_downsample)]  # per level, applied after it
        self.conv1 = CausalConv3d(c.latent_channels, widths[-1], 3)
        self.res_blocks = nn.ModuleList(
            TemporalResBlock(widths[-1], widths[-1], c.temporal_groups) for _ in range(c.temporal_res_blocks)
        )
        self.block_res_blocks = nn.ModuleList()
        self.conv_blocks = nn.ModuleList()
        for i, width in enumerate(widths):
            cin = widths[min(i + 1, len(widths) - 1)]
            self.block_res_blocks.append(
                nn.ModuleList(
                    TemporalResBlock(cin if j == 0 else width, width, c.temporal_groups)
                    for j in range(c.temporal_res_blocks)
                )
            )
            if i > 0:
                stride = self.strides[i]
                self.conv_blocks.append(CausalConv3d(width, width * stride, 3) if stride > 1 else nn.Identity())
        self.norm1 = nn.GroupNorm(c.temporal_groups, widths[0])
        self.conv_out = CausalConv3d(widths[0], c.latent_channels, 3)

    @property
    def levels(self) -> int:
        return len(self.block_res_blocks)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, k, h, w] -> [B, W_{L-1}, k, h, w]."""
        x = self.conv1(x)
        for block in self.res_blocks:
            x = block(x)
        return x

    def level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Level i: [B, W_{i+1}, t, h, w] -> [B, W_i, t * stride_i, h, w]."""
        for block in self.block_res_blocks[i]:
            x = block(x)
        if self.strides[i] > 1:
            x = depth_to_time(self.conv_blocks[i - 1](x), self.strides[i])
        return x

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        """[B, W_0, T, h, w] -> [B, C, T, h, w]."""
        return self.conv_out(F.silu(self.norm1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        for i in reversed(range(self.levels)):
            x = self.level(i, x)
        return self.tail(x)


class TemporalVAE(nn.Module):
    """VAE_Temporal's decode: post_quant_conv -> decoder -> drop the causal padding frames in front."""

    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        self.time_factor = c.time_factor
        self.post_quant_conv = CausalConv3d(c.latent_channels, c.latent_channels, 1)
        self.decoder = TemporalDecoder(c)

    def padding(self, num_frames: int) -> int:
        """Leading frames dropped so that k latent frames make ``num_frames`` (VAE_Temporal.decode's time padding)."""
        return -num_frames % self.time_factor

    def decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """One micro-frame chunk: [B, C, k, h, w] (denormalized) -> spatial latents [B, C, 4k - pad, h, w]
        (= ``num_frames`` for a chunk ``OpenSoraVAE.frame_chunks`` made)."""
        pad = self.padding(num_frames)
        x = self.decoder(self.post_quant_conv(z))
        return x[:, :, pad:] if pad else x


# ---------------------------------------------------------------------------------------------- spatial VAE


class ResnetBlock2D(nn.Module):
    """diffusers ResnetBlock2D without time embedding: (GroupNorm -> SiLU -> conv3x3) x 2 + shortcut."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin, eps=1e-6), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout, eps=1e-6), nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (self.conv_shortcut(x) if self.conv_shortcut is not None else x)


class MidAttention(nn.Module):
    """diffusers Attention of the VAE mid block: one head over the h*w positions, GroupNorm in, residual out."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, C, H, W]; 3-D batched matmuls (bmm) as the denoiser's attention."""
        n, c, h, w = x.shape
        tokens = self.group_norm(x).reshape(n, c, h * w).transpose(1, 2)
        q, k, v = self.to_q(tokens) * c**-0.5, self.to_k(tokens), self.to_v(tokens)
        attended = torch.bmm(torch.bmm(q, k.transpose(1, 2)).softmax(-1), v)
        return self.to_out[0](attended).transpose(1, 2).reshape(n, c, h, w) + x


class MidBlock(nn.Module):
    """UNetMidBlock2D: resnet -> attention -> resnet."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock2D(channels, channels, groups) for _ in range(2))
        self.attentions = nn.ModuleList([MidAttention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Upsample2D(nn.Module):
    """Nearest x2 then conv3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UpDecoderBlock2D(nn.Module):
    """``layers + 1`` resnets, then (all but the last block) Upsample2D."""

    def __init__(self, cin: int, cout: int, layers: int, groups: int, upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock2D(cin if j == 0 else cout, cout, groups) for j in range(layers + 1))
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return self.upsamplers[0](x) if self.upsamplers is not None else x


class SpatialDecoder(nn.Module):
    """diffusers ``Decoder``: conv_in -> mid_block -> up_blocks (widest first) -> GroupNorm -> SiLU -> conv_out."""

    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        widths = list(reversed(c.spatial_channels))
        self.conv_in = nn.Conv2d(c.latent_channels, widths[0], 3, padding=1)
        self.mid_block = MidBlock(widths[0], c.spatial_groups)
        self.up_blocks = nn.ModuleList(
            UpDecoderBlock2D(widths[max(i - 1, 0)], width, c.spatial_layers, c.spatial_groups, i < len(widths) - 1)
            for i, width in enumerate(widths)
        )
        self.conv_norm_out = nn.GroupNorm(c.spatial_groups, widths[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[-1], c.out_channels, 3, padding=1)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> [N, W_max, h, w]."""
        return self.mid_block(self.conv_in(x))

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        """[N, W_0, H, W] -> [N, 3, H, W]."""
        return self.conv_out(F.silu(self.conv_norm_out(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        for block in self.up_blocks:
            x = block(x)
        return self.tail(x)


class KLDecoder(nn.Module):
    """The decode half of diffusers ``AutoencoderKL``: post_quant_conv (1x1) -> decoder."""

    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        self.post_quant_conv = nn.Conv2d(c.latent_channels, c.latent_channels, 1)
        self.decoder = SpatialDecoder(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(x))


class SpatialVAE(nn.Module):
    """Open-Sora's VideoAutoencoderKL decode: frames' latents / scaling_factor -> AutoencoderKL decode."""

    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        self.scaling_factor = c.scaling_factor
        self.module = KLDecoder(c)

    def decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> [N, 3, 8h, 8w]; frames are independent (per-sample norms, attention within a frame)."""
        return self.module(latents / self.scaling_factor)


# ---------------------------------------------------------------------------------------------- pipeline


class OpenSoraVAE(nn.Module):
    """VideoAutoencoderPipeline, decode side: temporal VAE per micro-frame chunk, then the spatial VAE per frame."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = c = config
        if not len(c.scale) == len(c.shift) == c.latent_channels:
            raise UserError(f"scale {list(c.scale)} / shift {list(c.shift)} need {c.latent_channels} values each")
        self.register_buffer("scale", torch.tensor(c.scale, dtype=torch.float32)[None, :, None, None, None])
        self.register_buffer("shift", torch.tensor(c.shift, dtype=torch.float32)[None, :, None, None, None])
        self.temporal_vae = TemporalVAE(c)
        self.spatial_vae = SpatialVAE(c)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """The denoiser's latent -> the temporal VAE's: z * scale + shift (per channel)."""
        return z * self.scale + self.shift

    def frame_chunks(self, latent_frames: int, num_frames: int | None = None) -> list[tuple[int, int]]:
        """(latent frames, video frames) of each micro-frame chunk, in order, as the pipeline splits a decode:
        5 latent -> 17 video frames each, the last chunk possibly shorter. ``num_frames`` must be a length whose
        latent length is ``latent_frames`` (default: ``VAEConfig.video_frames``)."""
        c = self.config
        num_frames = c.video_frames(latent_frames) if num_frames is None else num_frames
        if latent_frames < 1 or num_frames < 1 or c.latent_frames(num_frames) != latent_frames:
            raise UserError(
                f"a {num_frames}-frame video has {c.latent_frames(num_frames)} latent frames, not {latent_frames}: "
                f"pass num_frames {c.video_frames(latent_frames)} (or a length encoding to {latent_frames} frames)"
            )
        chunks, step = [], c.micro_latent_frames
        for start in range(0, latent_frames, step):
            chunks.append((min(step, latent_frames - start), min(c.micro_frame_size, num_frames)))
            num_frames -= c.micro_frame_size
        return chunks

    def check_latent(self, z: torch.Tensor) -> None:
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise UserError(
                f"the VAE decodes latents [B, {self.config.latent_channels}, T, h, w], got {list(z.shape)}: "
                "the latent channels do not match this VAE"
            )

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """z [B, C, T_lat, h, w] -> video [B, 3, T, 8h, 8w] (T = ``num_frames``, default per ``frame_chunks``)."""
        self.check_latent(z)
        b, c, t_lat, h, w = z.shape
        x = self.denormalize(z)
        parts, start = [], 0
        for latents, frames in self.frame_chunks(t_lat, num_frames):
            parts.append(self.temporal_vae.decode(x[:, :, start : start + latents], frames))
            start += latents
        x = torch.cat(parts, dim=2)
        frames = x.transpose(1, 2).reshape(-1, c, h, w)  # (B T) C h w
        step = self.config.micro_batch_size
        decoded = torch.cat([self.spatial_vae.decode_frames(frames[i : i + step]) for i in range(0, len(frames), step)])
        _, co, ph, pw = decoded.shape
        return decoded.reshape(b, -1, co, ph, pw).transpose(1, 2)


def check_denoiser_match(config: VAEConfig, latent_channels: int, micro_latent_frames: int) -> None:
    """Refuse a VAE that cannot decode the denoiser's latents: other channels, or another temporal factor
    (the denoiser assumes ``micro_latent_frames`` latent frames per ``micro_frame_size`` video frames)."""
    if config.latent_channels != latent_channels:
        raise UserError(
            f"the VAE decodes {config.latent_channels}-channel latents but the denoiser makes {latent_channels}: "
            "pass the VAE trained with this denoiser"
        )
    if config.micro_latent_frames != micro_latent_frames:
        raise UserError(
            f"the VAE maps {config.micro_frame_size} video frames to {config.micro_latent_frames} latent frames "
            f"(temporal factor {config.time_factor}) but the denoiser assumes {micro_latent_frames}: "
            "pass the VAE trained with this denoiser"
        )


# ---------------------------------------------------------------------------------------------- loading


def init_random(model: OpenSoraVAE, seed: int = 0) -> OpenSoraVAE:
    """Seeded random weights (norms near 1, convs/linears ~ 1/sqrt(fan_in)); ``scale``/``shift`` keep the config's."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.GroupNorm):
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
            elif isinstance(module, nn.Conv2d | nn.Conv3d | nn.Linear):
                fan_in = math.prod(module.weight.shape[1:])
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / fan_in**0.5)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return model


def build_preset(name: str, seed: int = 0) -> OpenSoraVAE:
    return init_random(OpenSoraVAE(PRESETS[name].config), seed).eval()


def save_checkpoint(model: OpenSoraVAE, folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in the published layout (decoder side and scale/shift)."""
    return save_folder(model.config.to_dict(), model.state_dict(), folder)


def checkpoint_names(folder: Path) -> list[str]:
    """Every tensor name in the folder's weight files (no tensor is read)."""
    names: list[str] = []
    for file in weight_files(folder):
        if file.suffix == ".bin":
            names += torch.load(file, map_location="cpu", weights_only=True, mmap=True).keys()
            continue
        from safetensors import safe_open

        with safe_open(str(file), "pt") as handle:
            names += handle.keys()
    return names


def load_checkpoint(folder: Path) -> OpenSoraVAE:
    """A folder in the published layout -> OpenSoraVAE. Encoder-side tensors (``ENCODER_PREFIXES``) are skipped;
    ``scale``/``shift`` come from the weights when there, else from config.json; any other tensor the decoder
    lacks, or decoder tensor the folder lacks, is refused by name."""
    data = read_config(folder)
    if data.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        raise UserError(f"{folder} has model_type {data.get('model_type')!r}, not {MODEL_TYPE}: pass an Open-Sora VAE")
    model = OpenSoraVAE(VAEConfig.from_dict(data))
    expected = model.state_dict()
    names = {n for n in checkpoint_names(folder) if not n.startswith(ENCODER_PREFIXES)}
    missing = sorted(set(expected) - names - set(NORMALIZATION))
    unexpected = sorted(names - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{folder} does not match an Open-Sora VAE decoder of its config.json: "
            f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}"
        )
    state = {**expected, **{k: v.float() for k, v in read_tensors(folder, DECODER_KEYS).items()}}
    wrong = [k for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        raise UserError(
            f"{folder}: {wrong[0]} has shape {list(state[wrong[0]].shape)}, the config implies "
            f"{list(expected[wrong[0]].shape)}: the config.json does not match the weights"
        )
    model.load_state_dict(state)
    return model.eval()


def load_vae(spec: str) -> tuple[OpenSoraVAE, Source]:
    """A preset name (seeded random weights) or a local checkpoint folder -> (model, source)."""
    if spec in PRESETS:
        model = build_preset(spec)
        return model, Source("preset", spec, MODEL_TYPE, True, model.config.to_dict())
    path = Path(spec).expanduser()
    if path.is_dir():
        model = load_checkpoint(path)
        return model, Source("folder", str(path.resolve()), MODEL_TYPE, False, model.config.to_dict())
    raise UserError(f"unknown VAE {spec!r}: choose one of {', '.join(PRESETS)} or a checkpoint folder")
