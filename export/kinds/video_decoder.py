"""``video-decoder``: the Open-Sora 1.2 VAE decoder chunked by decoder blocks (``edgetrim.export.stages.vae``).

Chunks, in run order: ``temporal_head``, ``temporal_block_3`` .. ``_0``, ``spatial_head``, ``spatial_up_0`` ..
``_3``. Pipelines ``temporal`` (once per micro-frame chunk of latent frames) and ``spatial`` (once per
micro-batch of frames). Each temporal chunk holds a function per chunk length over one copy of its weights
(``contract.temporal_function``: ``latents_5`` for the full micro-frame chunks of 5 latent frames and, when the
frames are not a multiple of 5, e.g. ``latents_2`` for a shorter last chunk; ONNX: a graph each over one
.onnx.data, ExecuTorch: a method each, CoreML: one multifunction package, an iOS 18 spec, where a single
function stays a plain iOS 17 package). Section ``decoder``: the latent it takes, the video it makes, the micro
sizes, scale/shift and the invocation plan the runtime's host loop follows (each temporal step with the
function it runs).

Static geometry: one latent [1, C, T, h, w] (`frames`, `height`, `width` in latent units, as the denoiser's;
default On-device Sora's 20 x 20 x 27, 5 x 4 x 4 for test-sized presets) -> ``pixel_frames`` frames of
[8h, 8w]; spatial micro-batches of `micro_batch` frames (default the model's 4). The weights stream chunk by
chunk and the activations are bounded by one micro-frame chunk (temporal) and one micro-batch (spatial, the
peak of the decode), whatever the video length. `denoiser` DIR: a video-denoiser artifact the decoder must
decode (latent channels and temporal factor checked, its latent geometry the default).

Checks: the whole decode through the runtime's ``DecoderRunner`` against ``OpenSoraVAE.decode`` on a seeded
latent, then every pipeline chunk by chunk on the PyTorch chain's own tensors. CoreML is fp32 by default
(the SDXL VAE decoder is known to overflow fp16; `fp16` asks for it all the same).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgetrim.export.families.vae import OpenSoraVAE, check_denoiser_match, load_vae
from edgetrim.export.kinds.base import Chunk, Plan, single
from edgetrim.export.kinds.video import FPS, LATENT_FRAMES_PER_17, SEED_LATENT
from edgetrim.export.options import ExportOptions, precision
from edgetrim.export.stages.base import run_stages
from edgetrim.export.stages.vae import DecodeShape, StageGroup, decoder_stages, streaming_plan
from edgetrim.export.validate import Case, Check
from edgetrim.runtime import contract
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import Artifact, read_manifest
from edgetrim.runtime.video_decoder import OUTPUT_RULE, DecoderRunner

TINY_LATENT = (5, 4, 4)  # frames, height, width of test-sized presets: one micro-frame chunk, 32 x 32 pixels
WHOLE = "decoder"  # label of the whole-decode check (every pipeline, as the runtime's host loop runs them)
GEOMETRY = ("frames", "height", "width")


def denoiser_latent(opts: ExportOptions, model: OpenSoraVAE) -> tuple[int, int, int] | None:
    """The latent [T, h, w] of the `denoiser` artifact, after checking this VAE decodes its latents; None without."""
    folder = opts.value("denoiser", contract.VIDEO_DECODER)
    if folder is None:
        return None
    artifact = read_manifest(folder)
    if artifact.kind != contract.VIDEO_DENOISER:
        raise UserError(f"`denoiser` {folder} is a {artifact.kind} artifact: pass a video-denoiser artifact folder")
    video = artifact.manifest["video"]
    check_denoiser_match(model.config, video["in_channels"], video.get("micro_latent_frames", LATENT_FRAMES_PER_17))
    _, _, frames, height, width = video["latent_shape"]
    return frames, height, width


def decode_shape(opts: ExportOptions, model: OpenSoraVAE) -> DecodeShape:
    """The static geometry from the options, the `denoiser`'s latent or the preset's default, checked."""
    kind = contract.VIDEO_DECODER
    paired = denoiser_latent(opts, model)
    defaults = paired or (TINY_LATENT if model.config.temporal_filters < 64 else SEED_LATENT)
    values = {}
    for name, default in zip(GEOMETRY, defaults, strict=True):
        given = opts.value(name, kind)
        if given is not None and given <= 0:
            raise UserError(
                f"`{name}` {given} must be positive: e.g. `frames` 20 `height` 20 `width` 27 (latent units)"
            )
        if paired and given is not None and given != default:
            raise UserError(
                f"`{name}` {given} differs from the denoiser's latent {list(paired)} (frames, height, width): "
                "drop it, the decoder takes the denoiser's geometry"
            )
        values[name] = default if given is None else given
    batch = opts.value("micro_batch", kind)
    if batch is not None and batch <= 0:
        raise UserError(f"`micro_batch` {batch} must be positive: frames per spatial decode, e.g. 4")
    return DecodeShape(1, values["frames"], values["height"], values["width"], micro_batch=batch)


def reference_latent(model: OpenSoraVAE, shape: DecodeShape, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal latent [1, C, T, h, w] (the denoiser's output distribution)."""
    gen = torch.Generator().manual_seed(seed)
    c = model.config.latent_channels
    return torch.randn(shape.batch, c, shape.latent_frames, shape.height, shape.width, generator=gen)


def group_envs(groups: list[StageGroup], latent: torch.Tensor) -> dict[str, dict[str, np.ndarray]]:
    """Every named tensor of one invocation of each group (``StageGroup.label`` -> name -> array): each temporal
    group (function) on its first micro-frame chunk, spatial on the first micro-batch of the decoded frames."""
    frames = latent[0].transpose(0, 1)  # [T, C, h, w]
    envs, start, decoded = {}, 0, []
    for group in groups[:-1]:
        k = group.input_shape[0]
        env = run_stages(list(group.stages.values()), {contract.LATENT_CHUNK: frames[start : start + k].contiguous()})
        envs[group.label] = env
        start += k * group.invocations
        decoded.append(env[contract.FRAME_LATENTS])
    spatial = groups[-1]
    n = spatial.input_shape[0]
    decoded.append(torch.zeros(n, *spatial.input_shape[1:]))  # padding, as the host pads the last micro-batch
    batch = torch.cat(decoded)[:n].contiguous()
    envs[spatial.label] = run_stages(list(spatial.stages.values()), {contract.FRAME_BATCH: batch})
    return {name: {n: t.contiguous().numpy() for n, t in env.items()} for name, env in envs.items()}


def section(model: OpenSoraVAE, shape: DecodeShape, groups: list[StageGroup]) -> dict:
    c = model.config
    *temporal, spatial = groups
    frames = sum(g.frames * g.invocations for g in temporal)
    batch = spatial.input_shape[0]
    return {
        "architecture": "Open-Sora 1.2 VideoAutoencoderPipeline decoder (VAE_Temporal_SD + SDXL VAE decoder)",
        "latent_shape": [shape.batch, c.latent_channels, shape.latent_frames, shape.height, shape.width],
        "latent_channels": c.latent_channels,
        "pixel_frames": frames,
        "pixel_size": [shape.height * c.space_factor, shape.width * c.space_factor],
        "fps": FPS,  # the denoiser's (Open-Sora 1.2 saves its samples at 24 fps)
        "micro_frame_size": c.micro_frame_size,
        "micro_latent_frames": c.micro_latent_frames,
        "time_factor": c.time_factor,
        "micro_batch": batch,
        "scale": list(c.scale),
        "shift": list(c.shift),
        "scaling_factor": c.scaling_factor,
        "plan": [
            {
                "pipeline": g.name,
                "function": g.function,
                "invocations": g.invocations,
                "latent_frames": g.input_shape[0] // shape.batch,
                "pixel_frames": g.frames,
            }
            for g in temporal
        ]
        + [
            {
                "pipeline": spatial.name,
                "invocations": spatial.invocations,
                "frames": batch,
                "padding_frames": spatial.invocations * batch - frames,
            }
        ],
        "output": OUTPUT_RULE,
    }


def checks(
    model: OpenSoraVAE, groups: list[StageGroup], envs: dict[str, dict[str, np.ndarray]], latent: torch.Tensor
) -> list[Check]:
    """The whole decode through the runtime vs ``decode``; then each pipeline (each temporal function) chunk by
    chunk."""
    with torch.no_grad():
        video = model.decode(latent)[0].transpose(0, 1).contiguous().numpy()  # [T, 3, H, W]

    def decode(artifact: Artifact, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with DecoderRunner(artifact) as runner:  # the staged artifact as validation read it
            return {contract.FRAMES: runner.decode_video(feeds[contract.LATENT]).video}

    whole = Case("seeded latent", {contract.LATENT: latent.numpy()}, {contract.FRAMES: video})
    out = [Check(WHOLE, [whole], runner=decode)]
    for group in groups:
        out.append(Check(group.name, [Case("reference", {}, envs[group.label])], group.function, chunkwise=True))
    return out


def temporal_chunks(temporal: list[StageGroup], envs: dict[str, dict[str, np.ndarray]]) -> list[Chunk]:
    """One chunk per temporal stage holding a function per temporal group (chunk length), each with its own
    example, over one copy of the stage's weights (the groups' stages share the model's tensors)."""
    chunks = []
    for name in temporal[0].stages:
        functions, examples = {}, {}
        for group in temporal:
            stage = group.stages[name]
            env = envs[group.label]
            functions[group.function] = stage.eval()
            examples[group.function] = tuple(torch.from_numpy(env[n]) for n in stage.input_names)
        chunks.append(Chunk(name, functions, examples))
    return chunks


def plan(opts: ExportOptions, scratch: Path) -> Plan:
    del scratch
    kind = contract.VIDEO_DECODER
    prec = precision(opts.target, opts.fp16, coreml_default="fp32")
    model, source = load_vae(opts.model_spec)
    shape = decode_shape(opts, model)
    groups = decoder_stages(model, shape)
    latent = reference_latent(model, shape)
    envs = group_envs(groups, latent)
    chunks = temporal_chunks(groups[:-1], envs)
    spatial = groups[-1]
    env = {n: torch.from_numpy(a) for n, a in envs[spatial.label].items()}
    chunks += [single(name, stage, tuple(env[n] for n in stage.input_names)) for name, stage in spatial.stages.items()]
    decoder = section(model, shape, groups)
    rows = streaming_plan(groups)
    return Plan(
        kind=kind,
        source=source,
        precision=prec,
        chunks=chunks,
        pipelines={g.name: list(g.stages) for g in groups},  # the temporal groups: the same chunk names
        sections={"decoder": decoder},
        checks=lambda root: checks(model, groups, envs, latent),
        summary={
            "decoder": {k: decoder[k] for k in ("latent_shape", "pixel_frames", "pixel_size", "plan")},
            "largest_boundary_bytes": max(r["activation_bytes"] for r in rows),
        },
        source_extra={"has_projector": False, "token_dim": model.config.out_channels},
    )
