"""``video-denoiser``: a whole STDiT3 denoiser, chunked as in CI-DL (``edgetrim.export.stages.stdit3``).

Chunks ``caption``, ``embed``, ``depth_XX`` (functions ``plain`` and ``tdtm`` sharing one copy of the
weights), ``final``. Pipelines ``caption`` = [caption], ``denoiser`` = [embed, depth_00, ..., final].
Top-level file ``null_caption`` ([L, C_cap], for classifier-free guidance); section ``video``.

Denoiser I/O (static): ``latent`` [B, C_in, T, H, W], ``timestep`` [B] (0..1000), ``caption`` [B, L, C],
``caption_mask`` [B, L] (1 keep, 0 pad) -> ``velocity`` [B, C_out, T, H, W] (first C_in channels: v).
B is 2 by default: conditional and unconditional halves of classifier-free guidance in one call.
Checks: every chunk of both pipelines, each function, fed the PyTorch chain's own tensors.

``quantize`` int8 (int4 is refused) quantizes the chunks holding big linear weights: ``caption`` (the
caption MLP, 4096 -> C -> C), ``embed`` (timestep and fps MLPs, adaLN-single's C -> 6C) and every
``depth_XX`` (qkv, projections, cross-attention, MLP: ~32 C^2 per step, almost all of the model), both
functions alike, weights still stored once; ``final`` (one C -> patch x C_out linear that writes the
velocity) stays float. The check is then the velocity gate (``gate_checks``): the artifact run as the
sampler runs it against the float model's forward, at ``GATE_STEPS`` steps of the sampler's own
schedule, both functions, both CFG halves.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgetrim.export.families.stdit3 import PRESETS, STDiT3, VideoShape, caption_bias, load_stdit3
from edgetrim.export.kinds.base import Chunk, DataFile, Plan, Quantization, quantization, single
from edgetrim.export.options import ExportOptions, precision
from edgetrim.export.stages.stdit3 import (
    FUNCTIONS,
    CaptionStage,
    EmbedStage,
    FinalStage,
    depth_stages,
    depth_step_flops,
)
from edgetrim.export.targets import target_module
from edgetrim.export.targets.onnx import function_bytes
from edgetrim.export.validate import GUIDED, Case, Check
from edgetrim.runtime import contract
from edgetrim.runtime.contract import hidden_name
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import digest_path
from edgetrim.runtime.sampler import shift_ratio, timesteps
from edgetrim.runtime.video import random_caption

TINY_LATENT = (4, 8, 8)  # frames, height, width for test-sized presets
SEED_LATENT = (20, 20, 27)  # On-device Sora's export: [2, 4, 20, 20, 27] -> 140 tokens per frame
LATENT_FRAMES_PER_17 = 5  # Open-Sora 1.2's VAE: 17 video frames -> 5 latent frames
FPS = 24.0
SCHEDULER = {
    "type": "rflow",
    "num_steps": 30,
    "num_timesteps": 1000,
    "cfg_scale": 7.0,
    "shift": "open-sora-1.2 timestep_transform: t' = r t / (1 + (r - 1) t), t in [0, 1], "
    "r = sqrt(pixel_h * pixel_w / 512^2) * sqrt(pixel_frames // 17 * 5) (1 for a single frame)",
    "base_resolution": 512 * 512,
    "merge_steps": 15,
    "leap_at": 15,
}
MODES = ("int8",)  # the quantize modes a video denoiser takes
GATE_STEPS = 4  # sampling steps the velocity gate runs, spread over the schedule (first and last included)


def latent_shape(opts: ExportOptions, model: STDiT3) -> VideoShape:
    """The static latent geometry from the options (or the preset's default), checked."""
    kind = contract.VIDEO_DENOISER
    defaults = TINY_LATENT if model.config.hidden_size < 256 else SEED_LATENT
    given = (opts.value(n, kind) for n in ("frames", "height", "width"))
    frames, height, width = (d if v is None else v for v, d in zip(given, defaults, strict=True))
    for name, value in (("frames", frames), ("height", height), ("width", width)):
        if value <= 0:
            raise UserError(
                f"`{name}` {value} must be positive: e.g. `frames` 20 `height` 20 `width` 27 (latent units)"
            )
    pt = model.config.patch_size[0]
    if frames % pt or (frames // pt) % 2:
        raise UserError(
            f"`frames` {frames} gives {frames / pt:g} latent frame tokens: TDTM merges frame pairs, so pass an even "
            f"count (a multiple of {2 * pt}), e.g. `frames` {max(2 * pt, frames + (-frames % (2 * pt)))}"
        )
    batch = opts.value("cfg_batch", kind)
    if batch not in (1, 2):
        raise UserError(f"`cfg_batch` {batch} must be 1 or 2 (2: conditional and unconditional CFG halves at once)")
    return VideoShape(batch, frames, height, width, fps=FPS)


def pixel_frames(frames: int) -> int:
    """Video frames a latent of ``frames`` frames decodes to with Open-Sora 1.2's VAE (17 -> 5)."""
    return 1 if frames == 1 else math.ceil(frames / LATENT_FRAMES_PER_17) * 17


def reference_feeds(model: STDiT3, shape: VideoShape, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded reference inputs: latent, timestep, caption_embeds [B, L, C_cap], caption_mask (3/4 kept)."""
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    length = c.model_max_length
    mask = torch.zeros(shape.batch, length)
    mask[:, : max(1, 3 * length // 4)] = 1.0
    return {
        contract.LATENT: torch.randn(
            shape.batch, c.in_channels, shape.frames, shape.height, shape.width, generator=gen
        ),
        contract.TIMESTEP: torch.full((shape.batch,), 700.0),
        contract.CAPTION_EMBEDS: torch.randn(shape.batch, length, c.caption_channels, generator=gen),
        contract.CAPTION_MASK: mask,
    }


def reference_env(model: STDiT3, shape: VideoShape, feeds: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Every named tensor of both chains (function -> name -> tensor), computed with the PyTorch stages."""
    frames = shape.tokens(model.config.patch_size)[0]
    with torch.no_grad():
        base = dict(feeds)
        base[contract.CAPTION_TOKENS] = CaptionStage(model)(feeds[contract.CAPTION_EMBEDS])
        embedded = EmbedStage(model, shape)(feeds[contract.LATENT], feeds[contract.TIMESTEP])
        base.update(zip((hidden_name(0), contract.TIME, contract.TIME_MLP), embedded, strict=True))
        envs = {}
        for function in FUNCTIONS:
            env = dict(base)
            bias = caption_bias(feeds[contract.CAPTION_MASK])
            hidden = env[hidden_name(0)]
            for i in range(model.config.depth):
                caption, t_mlp = env[contract.CAPTION_TOKENS], env[contract.TIME_MLP]
                hidden = model.depth_step(i, hidden, caption, t_mlp, bias, frames, function == contract.TDTM)
                env[hidden_name(i + 1)] = hidden
            env[contract.VELOCITY] = FinalStage(model, shape)(hidden, env[contract.TIME])
            envs[function] = env
    return envs


def video_chunks(model: STDiT3, shape: VideoShape, env: dict, quantize: str | None = None) -> list[Chunk]:
    """caption, embed, depth steps (plain + tdtm), final, with the reference chain's inputs as examples;
    ``quantize`` applies to every chunk but ``final``."""
    frames = shape.tokens(model.config.patch_size)[0]
    chunks = [single("caption", CaptionStage(model), (env[contract.CAPTION_EMBEDS],), quantize=quantize)]
    embed_example = (env[contract.LATENT], env[contract.TIMESTEP])
    chunks.append(single("embed", EmbedStage(model, shape), embed_example, quantize=quantize))
    for i in range(model.config.depth):
        functions = depth_stages(model, i, frames)
        example = tuple(env[n].contiguous() for n in functions[contract.PLAIN].input_names)
        chunks.append(Chunk(f"depth_{i:02d}", dict(functions), example, quantize=quantize))
    final = FinalStage(model, shape)
    chunks.append(single("final", final, tuple(env[n] for n in final.input_names)))
    return chunks


def section(model: STDiT3, shape: VideoShape) -> dict:
    c = model.config
    nt, nh, nw = shape.tokens(c.patch_size)
    return {
        "latent_shape": [shape.batch, c.in_channels, shape.frames, shape.height, shape.width],
        "batch": shape.batch,
        "cfg_batched": shape.batch == 2,
        "in_channels": c.in_channels,
        "out_channels": c.out_channels,
        "patch_size": list(c.patch_size),
        "frames": shape.frames,
        "frame_tokens": nt,
        "tokens_per_frame": nh * nw,
        "pixel_size": [shape.height * 8, shape.width * 8],
        "pixel_frames": pixel_frames(shape.frames),
        "micro_frame_size": 17,  # the VAE's micro-frame chunk these latents assume: 17 video frames ->
        "micro_latent_frames": LATENT_FRAMES_PER_17,  # 5 latent frames (a video-decoder must match)
        "fps": shape.fps,
        "caption_length": c.model_max_length,
        "caption_channels": c.caption_channels,
        "hidden_size": c.hidden_size,
        "depth": c.depth,
        "variants": list(FUNCTIONS),
        "velocity_channels": "the first in_channels of velocity are v (the rest: learned sigma, unused)",
        "null_caption": contract.NULL_CAPTION,
        "scheduler": SCHEDULER,
        "flops": {f: depth_step_flops(model, shape, f == contract.TDTM) for f in FUNCTIONS},
    }


def checks(envs: dict) -> list[Check]:
    """Both pipelines chunk by chunk, each function fed its own chain's tensors."""
    numpy_env = {f: {n: t.numpy() for n, t in env.items()} for f, env in envs.items()}
    plain = numpy_env[contract.PLAIN]
    out = [Check(contract.CAPTION, [Case("reference", {}, plain)], chunkwise=True)]
    for function in FUNCTIONS:
        out.append(Check(contract.DENOISER, [Case("reference", {}, numpy_env[function])], function, chunkwise=True))
    return out


def schedule(shape: VideoShape) -> np.ndarray:
    """The runtime sampler's default schedule for this latent (``SCHEDULER``'s steps, shifted)."""
    ratio = shift_ratio(shape.height * 8, shape.width * 8, pixel_frames(shape.frames), SCHEDULER["base_resolution"])
    return timesteps(SCHEDULER["num_steps"], ratio)


def gate_steps(shape: VideoShape) -> list[tuple[int, float]]:
    """(step, timestep) of the ``GATE_STEPS`` gated steps, evenly spread over ``schedule``."""
    ts = schedule(shape)
    return [(int(i), float(ts[i])) for i in np.linspace(0, len(ts) - 1, GATE_STEPS).round().astype(int)]


def gate_checks(model: STDiT3, shape: VideoShape, quant: Quantization, seed: int = 0) -> list[Check]:
    """The velocity gate, one check per function, with the float model's velocities.

    Inputs per gated step: a seeded noise latent moved along the rectified-flow path to the step's
    timestep, ``z_t = (1 - t/1000) x0 + t/1000 noise`` (a seeded standard-normal x0 stands in for a clean
    latent), the runtime's seeded T5-feature stand-in caption (3/4 of it kept) and the null caption: a
    denoiser artifact has no text encoder to turn the calibration prompts into captions. Reference:
    ``model.forward`` on the CFG pair, velocity [2, C_in, T, H, W] (conditional, unconditional) and the
    guided ``v_u + g (v_c - v_u)``.
    """
    c = model.config
    rng = np.random.default_rng(seed)
    latent_shape = (c.in_channels, shape.frames, shape.height, shape.width)
    noise, clean = (rng.standard_normal(latent_shape).astype(np.float32) for _ in range(2))
    caption = random_caption(c.model_max_length, c.caption_channels, seed).embeds
    mask = np.zeros(c.model_max_length, np.float32)
    mask[: max(1, 3 * c.model_max_length // 4)] = 1.0
    captions = np.stack([caption, model.y_embedder.y_embedding.detach().numpy()]).astype(np.float32)
    g = SCHEDULER["cfg_scale"]
    checks = []
    for function in FUNCTIONS:
        cases = []
        for step, t in gate_steps(shape):
            s = np.float32(t / SCHEDULER["num_timesteps"])
            z = (1 - s) * clean + s * noise
            with torch.no_grad():
                v = model(
                    torch.from_numpy(np.stack([z, z])),
                    torch.full((2,), t),
                    torch.from_numpy(captions),
                    torch.from_numpy(np.stack([mask, mask])),
                    merge=function == contract.TDTM,
                    fps=shape.fps,
                )[:, : c.in_channels].numpy()
            feeds = {
                contract.LATENT: z,
                contract.TIMESTEP: np.array([t], np.float32),
                contract.CAPTION_EMBEDS: captions,
                contract.CAPTION_MASK: mask,
            }
            expected = {contract.VELOCITY: v, GUIDED: v[1] + np.float32(g) * (v[0] - v[1])}
            cases.append(Case(f"step-{step:02d} t={t:.0f}", feeds, expected))
        checks.append(Check(contract.DENOISER, cases, function, fidelity=quant.velocity_gate))
    return checks


def gate_inputs(shape: VideoShape) -> dict:
    """The report's record of what the velocity gate ran on (in place of a calibration set)."""
    steps = gate_steps(shape)
    return {
        "source": "seeded",
        "steps": [step for step, _ in steps],
        "timesteps": [round(t, 2) for _, t in steps],
        "summary": f"{len(steps)} of the {SCHEDULER['num_steps']}-step schedule's steps "
        f"(t = {', '.join(f'{t:.0f}' for _, t in steps)}) x {' + '.join(FUNCTIONS)}, CFG pair; noise latents on "
        "the rectified-flow path, seeded T5-feature stand-in captions (the artifact has no text encoder)",
    }


def sizes(target: str, fp16: bool, first_depth: Chunk):
    """Report facts after writing: artifact bytes with both functions vs with ``plain`` alone."""

    def measure(root: Path, manifest: dict) -> dict:
        both = one = sum(f["bytes"] for f in manifest.get("files", []))  # data files: in both
        plain_alone = None
        for entry in manifest["chunks"]:
            total = sum(f["bytes"] for f in entry["files"])
            both += total
            if "functions" not in entry:
                one += total
            elif target == contract.ONNX:
                one += function_bytes(root / entry["functions"][contract.PLAIN]["file"])
            else:  # ExecuTorch / CoreML: a depth step exported with plain alone, counted for every depth step
                if plain_alone is None:
                    with tempfile.TemporaryDirectory() as tmp:
                        plain = {contract.PLAIN: first_depth.functions[contract.PLAIN]}
                        written = target_module(target).write(
                            plain, first_depth.example, Path(tmp), "plain", fp16, first_depth.quantize
                        )
                        plain_alone = sum(digest_path(p)[0] for p, _ in written.files)
                one += plain_alone
        note = (
            "one variant = every plain graph plus the external tensors it references (exact, per chunk)"
            if target == contract.ONNX
            else "one variant = depth_00 exported again with the plain function only, counted for every depth step"
        )
        return {"one_variant_bytes": one, "two_variant_ratio": both / one, "size_note": note}

    return measure


def plan(opts: ExportOptions, scratch: Path) -> Plan:
    del scratch
    kind = contract.VIDEO_DENOISER
    frames = opts.value("frames", kind)
    if frames is not None and frames % 2:  # refuse before building a large model (full check below)
        raise UserError(f"`frames` {frames} is odd: TDTM merges frame pairs, pass an even count such as 20")
    prec = precision(opts.target, opts.fp16)
    quant = quantization(opts, kind, MODES, random_weights=opts.model_spec in PRESETS)  # before a large build
    model, source = load_stdit3(opts.model_spec)
    shape = latent_shape(opts, model)
    envs = reference_env(model, shape, reference_feeds(model, shape))
    chunks = video_chunks(model, shape, envs[contract.PLAIN], "int8" if quant.on else None)
    null = model.y_embedder.y_embedding.detach().numpy().astype(np.float32)
    video = section(model, shape)
    return Plan(
        kind=kind,
        source=source,
        precision=prec,
        chunks=chunks,
        pipelines={contract.CAPTION: ["caption"], contract.DENOISER: [c.name for c in chunks[1:]]},
        sections={"video": video},
        data_files=[
            DataFile(contract.NULL_CAPTION, contract.DATA_FILES[contract.NULL_CAPTION], lambda p: np.save(p, null))
        ],
        checks=lambda root: gate_checks(model, shape, quant) if quant.on else checks(envs),
        summary={
            "latent_shape": video["latent_shape"],
            "tokens_per_frame": video["tokens_per_frame"],
            "depth": model.config.depth,
            "flops_ratio_depth_step": video["flops"][contract.TDTM] / video["flops"][contract.PLAIN],
            "quantization": quant.describe() | ({"calibration": gate_inputs(shape)} if quant.on else {}),
        },
        source_extra={"has_projector": False, "token_dim": model.config.hidden_size},
        after_write=sizes(opts.target, prec == "fp16", chunks[2]),
    )
