"""Open-Sora 1.2 VAE decoder as static-shape stages, chunked by decoder blocks so a decode streams.

Stage groups, each run in order on every invocation:

- ``temporal`` (once per micro-frame chunk of k latent frames): ``temporal_head`` (z * scale + shift,
  post_quant_conv, conv1, res_blocks), ``temporal_block_i`` for levels L-1 .. 1 (res blocks, then the causal conv +
  depth-to-time that doubles the frames where the encoder halved them), ``temporal_block_0`` (level 0, norm,
  conv_out, the leading causal-padding frames dropped). A shorter last chunk is a second temporal group over
  the same weights and stage names, other static shapes: one function per chunk length
  (``contract.temporal_function``), so an artifact stores the temporal weights once.
- ``spatial`` (once per micro-batch of N frames): ``spatial_head`` (/ scaling_factor, post_quant_conv, conv_in,
  mid block), ``spatial_up_i`` per up block, the last with norm + conv_out (its input is the largest tensor of
  the decode, so it is not passed across a boundary twice).

Every tensor is 4-D, frames in (B T) order: the temporal stages hold a sample's frames in the batch dimension,
and every stage runs the family's modules with their Conv3d, GroupNorm and nearest upsampling swapped for 4-D ops
that XNNPACK takes (``exportable``: ``FrameConv``, ``FrameGroupNorm``, ``FrameUpsample``; equal to them, on the
model's own tensors, no copy). ``latent_chunk`` [B*k, C, h, w] -> ``temporal_00`` .. -> ``frame_latents``
[B*f, C, h, w]; the host concatenates the chunks' frames per sample, takes them in (B T) order in micro-batches of
N (the last padded with zero frames, which decode independently and are dropped): ``frame_batch`` [N, C, h, w] ->
``spatial_00`` .. -> ``frames`` [N, 3, 8h, 8w] -> video [B, 3, T, 8h, 8w]. ``run_decode`` is that host loop in
PyTorch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from edgetrim.export.families.vae import CausalConv3d, OpenSoraVAE, Upsample2D
from edgetrim.export.stages.base import Stage, run_stages
from edgetrim.runtime.contract import (
    FRAME_BATCH,
    FRAME_LATENTS,
    FRAMES,
    LATENT_CHUNK,
    SPATIAL,
    TEMPORAL,
    spatial_name,
    temporal_function,
    temporal_name,
)


def shared(tensor: torch.Tensor, *shape: int) -> nn.Parameter:
    """The model's tensor viewed as ``shape``, as a parameter of a stage (same storage, no copy)."""
    return nn.Parameter(tensor.detach().view(*shape), requires_grad=False)


class FrameConv(nn.Module):
    """A ``CausalConv3d`` on frames [B*T, C_in, H, W] -> [B*T, C_out, H, W], in 4-D ops: each frame's k_t time taps
    (k_t - 1 zero frames in front of every sample) stacked into the channels (channel c * k_t + j = tap j of channel
    c), one conv2d whose weight is the Conv3d's [C_out, C_in, k_t, k, k] viewed as [C_out, C_in * k_t, k, k]."""

    def __init__(self, conv: CausalConv3d, samples: int) -> None:
        super().__init__()
        weight = conv.conv.weight
        cout, cin, self.taps, kh, kw = weight.shape
        self.weight = shared(weight, cout, cin * self.taps, kh, kw)
        self.bias = shared(conv.conv.bias, cout) if conv.conv.bias is not None else None
        self.samples, self.padding = samples, (kh // 2, kw // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.taps > 1:
            n, c, h, w = x.shape
            t = n // self.samples
            seq = F.pad(x.reshape(self.samples, t, c, h * w), (0, 0, 0, 0, self.taps - 1, 0))
            taps = [seq[:, j : j + t].reshape(n, c, 1, h * w) for j in range(self.taps)]
            x = torch.cat(taps, dim=2).reshape(n, c * self.taps, h, w)
        return F.conv2d(x, self.weight, self.bias, padding=self.padding)


class FrameGroupNorm(nn.Module):
    """``GroupNorm`` of [B, C, T, H, W] (or of [N, C, H, W]: T = 1) on frames [B*T, C, H, W]: statistics over
    (T, C/G, H, W) per sample and group. Means are taken as XNNPACK pools them (over the last two dims of a 4-D
    tensor): per frame and group on the view [B*T, G, C/G * H * W, 1], then over the T frames (the mean of means:
    equal counts)."""

    def __init__(self, norm: nn.GroupNorm, samples: int) -> None:
        super().__init__()
        self.weight = shared(norm.weight, -1, 1, 1)
        self.bias = shared(norm.bias, -1, 1, 1)
        self.samples, self.groups, self.eps = samples, norm.num_groups, norm.eps

    def group_mean(self, y: torch.Tensor) -> torch.Tensor:
        """[B, T, G, R] -> [B, 1, G, 1]: the mean over each sample's T frames and the group's R values."""
        b, t, g, r = y.shape
        frames = y.reshape(b * t, g, r, 1).mean(dim=(2, 3), keepdim=True)  # [B*T, G, 1, 1]
        if t == 1:
            return frames.reshape(b, 1, g, 1)
        return frames.reshape(b, t, g, 1).permute(0, 2, 1, 3).mean(dim=(2, 3), keepdim=True).reshape(b, 1, g, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = x.reshape(self.samples, n // self.samples, self.groups, c // self.groups * h * w)
        centered = y - self.group_mean(y)
        variance = self.group_mean(centered * centered)
        return (centered * torch.rsqrt(variance + self.eps)).reshape(n, c, h, w) * self.weight + self.bias


class FrameUpsample(nn.Module):
    """``Upsample2D`` (nearest x2, conv3x3) with the nearest x2 as broadcast products with ones on 4-D views
    (XNNPACK has no nearest upsampling): each value repeated along the width, then each row repeated."""

    def __init__(self, upsample: Upsample2D) -> None:
        super().__init__()
        self.conv = upsample.conv
        self.register_buffer("twice", torch.ones(1, 1, 1, 2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        wide = (x.reshape(n, c * h, w, 1) * self.twice).reshape(n, c * h, 1, 2 * w)
        tall = wide * self.twice.reshape(1, 1, 2, 1)
        return self.conv(tall.reshape(n, c, 2 * h, 2 * w))


def exportable(modules: list[nn.Module], samples: int) -> nn.Sequential:
    """``modules`` in sequence, as 4-D ops XNNPACK takes, for ``samples`` samples whose frames are in (B T) order:
    a copy holding the model's own tensors (no weight is copied, the model is left as it is) in which every
    ``CausalConv3d`` is a ``FrameConv``, every ``GroupNorm`` a ``FrameGroupNorm`` and every ``Upsample2D`` a
    ``FrameUpsample``; each module's own forward is kept."""
    memo = {id(t): t for m in modules for t in (*m.parameters(), *m.buffers())}
    body = copy.deepcopy(nn.Sequential(*modules), memo)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, CausalConv3d):
                setattr(parent, name, FrameConv(child, samples))
            elif isinstance(child, nn.GroupNorm):
                setattr(parent, name, FrameGroupNorm(child, samples))
            elif isinstance(child, Upsample2D):
                setattr(parent, name, FrameUpsample(child))
            else:
                swap(child)

    swap(body)
    return body


def frames_depth_to_time(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``depth_to_time`` on frames: [N, C*f, H, W] -> [N*f, C, H, W], frame n's channel c*f + s becoming frame
    n*f + s's channel c."""
    n, cf, h, w = x.shape
    return x.reshape(n, cf // factor, factor, h * w).transpose(1, 2).reshape(n * factor, cf // factor, h, w)


class TemporalHeadStage(Stage):
    """latent_chunk [B*k, C, h, w] -> temporal_00 [B*k, W_max, h, w]."""

    def __init__(self, model: OpenSoraVAE, samples: int) -> None:
        super().__init__()
        c = model.config.latent_channels
        self.register_buffer("scale", model.scale.view(1, c, 1, 1), persistent=False)
        self.register_buffer("shift", model.shift.view(1, c, 1, 1), persistent=False)
        vae = model.temporal_vae
        self.body = exportable([vae.post_quant_conv, vae.decoder.conv1, *vae.decoder.res_blocks], samples)
        self.input_names, self.output_names = [LATENT_CHUNK], [temporal_name(0)]

    def forward(self, latent_chunk: torch.Tensor) -> torch.Tensor:
        return self.body(latent_chunk * self.scale + self.shift)


class TemporalBlockStage(Stage):
    """Decoder level ``level`` > 0: temporal_i [B*t, W_{level+1}, h, w] -> [B*t*stride, W_level, h, w]."""

    def __init__(self, model: OpenSoraVAE, level: int, index: int, samples: int) -> None:
        super().__init__()
        decoder = model.temporal_vae.decoder
        self.stride = decoder.strides[level]
        upsample = [decoder.conv_blocks[level - 1]] if self.stride > 1 else []
        self.body = exportable([*decoder.block_res_blocks[level], *upsample], samples)
        self.input_names, self.output_names = [temporal_name(index)], [temporal_name(index + 1)]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.body(hidden)
        return frames_depth_to_time(hidden, self.stride) if self.stride > 1 else hidden


class TemporalTailStage(Stage):
    """Level 0 + norm + conv_out: temporal_i [B*4k, W_1, h, w] -> frame_latents [B*f, C, h, w] (f = 4k - crop)."""

    def __init__(self, model: OpenSoraVAE, index: int, crop: int, samples: int) -> None:
        super().__init__()
        decoder = model.temporal_vae.decoder
        self.body = exportable([*decoder.block_res_blocks[0], decoder.norm1, nn.SiLU(), decoder.conv_out], samples)
        self.crop, self.samples = crop, samples
        self.input_names, self.output_names = [temporal_name(index)], [FRAME_LATENTS]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.body(hidden)
        if not self.crop:  # a no-op slice is an alias node
            return out
        n, c, h, w = out.shape
        kept = out.reshape(self.samples, n // self.samples, c * h * w)[:, self.crop :]
        return kept.reshape(n - self.samples * self.crop, c, h, w)


class SpatialHeadStage(Stage):
    """frame_batch [N, C, h, w] -> spatial_00 [N, W_max, h, w]."""

    def __init__(self, model: OpenSoraVAE, frames: int) -> None:
        super().__init__()
        kl = model.spatial_vae.module
        self.scaling_factor = model.spatial_vae.scaling_factor
        self.body = exportable([kl.post_quant_conv, kl.decoder.conv_in, kl.decoder.mid_block], frames)
        self.input_names, self.output_names = [FRAME_BATCH], [spatial_name(0)]

    def forward(self, frame_batch: torch.Tensor) -> torch.Tensor:
        return self.body(frame_batch / self.scaling_factor)


class SpatialUpStage(Stage):
    """Up block ``index``: spatial_i [N, W, H, W] -> spatial_{i+1} (x2 size but the last); the last block also
    runs norm + SiLU + conv_out -> frames [N, 3, 8h, 8w]."""

    def __init__(self, model: OpenSoraVAE, index: int, frames: int) -> None:
        super().__init__()
        decoder = model.spatial_vae.module.decoder
        last = index == len(decoder.up_blocks) - 1
        tail = [decoder.conv_norm_out, nn.SiLU(), decoder.conv_out] if last else []
        self.body = exportable([decoder.up_blocks[index], *tail], frames)
        self.input_names = [spatial_name(index)]
        self.output_names = [FRAMES if last else spatial_name(index + 1)]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.body(hidden)


@dataclass(frozen=True)
class DecodeShape:
    """Static geometry of a decode: latent [batch, C, latent_frames, height, width] -> ``num_frames`` video frames
    (default: the model's ``video_frames``), spatial micro-batches of ``micro_batch`` frames (default: the model's
    ``micro_batch_size``, at most every frame of the decode)."""

    batch: int
    latent_frames: int
    height: int
    width: int
    num_frames: int | None = None
    micro_batch: int | None = None


@dataclass
class StageGroup:
    """Stages run in order on each of ``invocations`` inputs of ``input_shape`` (micro-frame chunks of the latent,
    [B*k, C, h, w], or micro-batches of frames, [N, C, h, w]); the stages of all groups share the model's weights.
    ``name``: the pipeline (``temporal``, ``spatial``); ``function``: the function of the pipeline's chunks the
    group is (temporal: ``temporal_function(k)``, one per chunk length, the same stage names; spatial: None).
    ``frames``: video frames per sample one invocation makes (temporal groups; the micro-batch N for spatial)."""

    name: str
    stages: dict[str, Stage]
    invocations: int
    input_shape: tuple[int, ...]
    frames: int
    function: str | None = None

    @property
    def label(self) -> str:
        """``pipeline`` or ``pipeline:function``: unique among a decode's groups."""
        return f"{self.name}:{self.function}" if self.function else self.name


def temporal_stages(model: OpenSoraVAE, frames: int, samples: int) -> dict[str, Stage]:
    """The temporal decoder of one micro-frame chunk making ``frames`` video frames, keyed ``temporal_{part}``
    (the same names whatever the chunk length: the chunks whose functions they are)."""
    levels = model.temporal_vae.decoder.levels
    stages: dict[str, Stage] = {f"{TEMPORAL}_head": TemporalHeadStage(model, samples)}
    for index, level in enumerate(range(levels - 1, 0, -1)):
        stages[f"{TEMPORAL}_block_{level}"] = TemporalBlockStage(model, level, index, samples)
    crop = model.temporal_vae.padding(frames)
    stages[f"{TEMPORAL}_block_0"] = TemporalTailStage(model, levels - 1, crop, samples)
    return {name: stage.eval() for name, stage in stages.items()}


def decoder_stages(model: OpenSoraVAE, shape: DecodeShape) -> list[StageGroup]:
    """The stage groups of a decode at ``shape``, in run order: temporal (per micro-frame chunk: one group per
    chunk length, each a function of the temporal chunks, ``temporal_function(k)``), then spatial (per micro-batch
    of frames)."""
    c = model.config
    chunks = model.frame_chunks(shape.latent_frames, shape.num_frames)
    b, h, w = shape.batch, shape.height, shape.width
    groups = []
    for chunk in dict.fromkeys(chunks):  # the full chunks, then a shorter last one (each length makes one count)
        latents, frames = chunk
        stages = temporal_stages(model, frames, b)
        shape_in = (b * latents, c.latent_channels, h, w)
        function = temporal_function(latents)
        groups.append(StageGroup(TEMPORAL, stages, chunks.count(chunk), shape_in, frames, function))
    total = b * sum(frames for _, frames in chunks)
    batch = min(shape.micro_batch or c.micro_batch_size, total)
    spatial: dict[str, Stage] = {"spatial_head": SpatialHeadStage(model, batch).eval()}
    for i in range(len(model.spatial_vae.module.decoder.up_blocks)):
        spatial[f"spatial_up_{i}"] = SpatialUpStage(model, i, batch).eval()
    groups.append(StageGroup(SPATIAL, spatial, -(-total // batch), (batch, c.latent_channels, h, w), batch))
    return groups


def run_decode(groups: list[StageGroup], latent: torch.Tensor) -> torch.Tensor:
    """The host loop over the stages: latent [B, C, T_lat, h, w] -> video [B, 3, T, 8h, 8w] (``decode``'s result)."""
    *temporal, spatial = groups
    b = latent.shape[0]
    frames = latent.transpose(1, 2)  # [B, T_lat, C, h, w]
    parts, start = [], 0
    for group in temporal:
        latents = group.input_shape[0] // b
        for _ in range(group.invocations):
            chunk = frames[:, start : start + latents].flatten(0, 1)
            out = run_stages(list(group.stages.values()), {LATENT_CHUNK: chunk})[FRAME_LATENTS]
            parts.append(out.reshape(b, -1, *out.shape[1:]))
            start += latents
    x = torch.cat(parts, dim=1).flatten(0, 1)  # [(B T), C, h, w]
    total, batch = len(x), spatial.input_shape[0]
    x = torch.cat([x, x.new_zeros(spatial.invocations * batch - total, *x.shape[1:])])
    stages = list(spatial.stages.values())
    decoded = torch.cat([run_stages(stages, {FRAME_BATCH: part})[FRAMES] for part in x.split(batch)])[:total]
    return decoded.reshape(b, total // b, *decoded.shape[1:]).transpose(1, 2)


def output_shapes(stage: Stage, inputs: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The stage's output shapes for static input shapes, computed on meta tensors (no arithmetic, no memory)."""
    tensors = {n: torch.empty_like(t, device="meta") for n, t in [*stage.named_parameters(), *stage.named_buffers()]}
    args = tuple(torch.empty(inputs[n], device="meta") for n in stage.input_names)
    with torch.no_grad():
        out = functional_call(stage, tensors, args)
    return {
        n: tuple(t.shape) for n, t in zip(stage.output_names, out if isinstance(out, tuple) else (out,), strict=True)
    }


def streaming_plan(groups: list[StageGroup]) -> list[dict]:
    """One row per stage and group in run order: its group (pipeline) and function, invocations, input/output
    shapes, weight bytes (a temporal stage's again for each function: they are the same weights) and boundary
    activation bytes (inputs + outputs, fp32; a stage's internal peak is a few times its largest tensor)."""
    rows = []
    for group in groups:
        first = next(iter(group.stages.values())).input_names[0]
        env = {first: group.input_shape}
        for name, stage in group.stages.items():
            outputs = output_shapes(stage, env)
            inputs = {n: env[n] for n in stage.input_names}
            weights = sum(t.numel() for t in [*stage.parameters(), *stage.buffers()]) * 4
            activations = sum(4 * torch.Size(s).numel() for s in [*inputs.values(), *outputs.values()])
            rows.append(
                {
                    "stage": name,
                    "group": group.name,
                    "function": group.function,
                    "invocations": group.invocations,
                    "inputs": inputs,
                    "outputs": outputs,
                    "weight_bytes": weights,
                    "activation_bytes": activations,
                }
            )
            env.update(outputs)
    return rows
