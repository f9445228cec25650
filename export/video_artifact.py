"""``edgetrim export --model stdit3-*``: a whole STDiT3 denoiser as a chunked ``video-denoiser`` artifact.

Chunks (CI-DL granularity): ``caption`` (caption embedder, run once per prompt), ``embed`` (timestep +
3-D patch embedding), ``depth_XX`` (spatial + temporal block XX, functions ``plain`` and ``tdtm`` sharing
one copy of the weights, see ``export.video``), ``final``. Pipelines: ``caption`` = [caption],
``denoiser`` = [embed, depth_00, ..., final]. Top-level ``files``: the null caption embedding
(``null_caption.npy``, [L, C_cap]) for classifier-free guidance.

Denoiser I/O (static): ``latent`` [B, C_in, T, H, W], ``timestep`` [B] (0..1000), ``caption`` [B, L, C],
``caption_mask`` [B, L] (1 keep, 0 pad) -> ``velocity`` [B, C_out, T, H, W] (first C_in channels: v).
B is 2 by default: conditional and unconditional halves of classifier-free guidance in one call.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgetrim.export import video
from edgetrim.export.artifact import check_out_dir, file_entry, staging, write_json
from edgetrim.export.models.stdit3 import (
    PRESETS,
    CaptionStage,
    EmbedStage,
    FinalStage,
    STDiT3,
    VideoShape,
    caption_bias,
    load_stdit3,
)
from edgetrim.export.pipeline import SUFFIX, TARGETS, VERSION, ChunkExport, io_spec, precision_for, write_chunk
from edgetrim.export.validate import Validation, ValidationFailed
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import MANIFEST, SCHEMA_VERSION, read_manifest

NULL_CAPTION = "null_caption.npy"
TINY_LATENT = (4, 8, 8)  # frames, height, width for test-sized presets
SEED_LATENT = (20, 20, 27)  # On-device Sora's export: [2, 4, 20, 20, 27] -> 140 tokens per frame
LATENT_FRAMES_PER_17 = 5  # Open-Sora 1.2's VAE: 17 video frames -> 5 latent frames
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


@dataclass
class VideoExportOptions:
    target: str
    model: str
    frames: int | None = None  # latent frames T (even: TDTM merges pairs)
    height: int | None = None  # latent height
    width: int | None = None  # latent width
    batch: int = 2  # 2: CFG's conditional + unconditional halves in one call
    fps: float = 24.0
    out: Path | None = None
    atol: float = 1e-4
    fp16: bool | None = None
    validate: bool = True


def is_video_model(spec: str | None) -> bool:
    """STDiT3 presets and checkpoint folders, and the T5 text encoders that go with them (``export.text_encoder``)."""
    from edgetrim.export.text_encoder import is_t5

    if spec is None:
        return False
    if is_t5(spec):
        return True
    if spec in PRESETS or spec.lower().startswith("stdit3"):
        return True
    config = Path(spec).expanduser() / "config.json"
    return config.is_file() and '"STDiT3"' in config.read_text()


def latent_shape(opts: VideoExportOptions, model: STDiT3) -> VideoShape:
    """The static latent geometry from the flags (or the preset's default), checked."""
    small = model.config.hidden_size < 256
    frames, height, width = (
        given if given is not None else default
        for given, default in zip(
            (opts.frames, opts.height, opts.width), TINY_LATENT if small else SEED_LATENT, strict=True
        )
    )
    for flag, value in (("--frames", frames), ("--height", height), ("--width", width)):
        if value <= 0:
            raise UserError(f"{flag} {value} must be positive: e.g. --frames 20 --height 20 --width 27 (latent units)")
    pt = model.config.patch_size[0]
    if frames % pt or (frames // pt) % 2:
        raise UserError(
            f"--frames {frames} gives {frames / pt:g} latent frame tokens: TDTM merges frame pairs, so pass an even "
            f"count (a multiple of {2 * pt}), e.g. --frames {max(2 * pt, frames + (-frames % (2 * pt)))}"
        )
    if opts.batch not in (1, 2):
        raise UserError(
            f"--cfg-batch {opts.batch} must be 1 or 2 (2: conditional and unconditional CFG halves at once)"
        )
    return VideoShape(opts.batch, frames, height, width, fps=opts.fps)


def pixel_frames(frames: int) -> int:
    """Video frames a latent of ``frames`` frames decodes to with Open-Sora 1.2's VAE (17 -> 5)."""
    return 1 if frames == 1 else math.ceil(frames / LATENT_FRAMES_PER_17) * 17


def stage_examples(model: STDiT3, shape: VideoShape, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded reference inputs: latent, timestep, caption_embeds [B, L, C_cap], caption_mask (3/4 kept)."""
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    length = c.model_max_length
    mask = torch.zeros(shape.batch, length)
    mask[:, : max(1, 3 * length // 4)] = 1.0
    return {
        "latent": torch.randn(shape.batch, c.in_channels, shape.frames, shape.height, shape.width, generator=gen),
        "timestep": torch.full((shape.batch,), 700.0),
        "caption_embeds": torch.randn(shape.batch, length, c.caption_channels, generator=gen),
        "caption_mask": mask,
    }


def reference_env(model: STDiT3, shape: VideoShape, feeds: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Every named tensor of both chains (variant -> name -> tensor), computed with the PyTorch stages."""
    frames = shape.tokens(model.config.patch_size)[0]
    with torch.no_grad():
        base = dict(feeds)
        base["caption"] = CaptionStage(model)(feeds["caption_embeds"])
        embedded = EmbedStage(model, shape)(feeds["latent"], feeds["timestep"])
        base.update(zip(("hidden_00", "t", "t_mlp"), embedded, strict=True))
        envs = {}
        for variant, merge in (("plain", False), ("tdtm", True)):
            env = dict(base)
            bias = caption_bias(feeds["caption_mask"])
            hidden = env["hidden_00"]
            for i in range(model.config.depth):
                hidden = model.depth_step(i, hidden, env["caption"], env["t_mlp"], bias, frames, merge)
                env[f"hidden_{i + 1:02d}"] = hidden
            env["velocity"] = FinalStage(model, shape)(hidden, env["t"])
            envs[variant] = env
    return envs


def chunk_plan(model: STDiT3, shape: VideoShape, env: dict) -> list[tuple[ChunkExport, bool]]:
    """(chunk, has plain/tdtm functions) in manifest order: caption, embed, depth steps, final."""
    out: list[tuple[ChunkExport, bool]] = []
    caption = CaptionStage(model).eval()
    out.append((ChunkExport("caption", caption, (env["caption_embeds"],)), False))
    embed = EmbedStage(model, shape).eval()
    out.append((ChunkExport("embed", embed, (env["latent"], env["timestep"])), False))
    frames = shape.tokens(model.config.patch_size)[0]
    for i in range(model.config.depth):
        stage = video.depth_stages(model, i, frames)["plain"]
        out.append((ChunkExport(f"depth_{i:02d}", stage, tuple(env[n].contiguous() for n in stage.input_names)), True))
    final = FinalStage(model, shape).eval()
    out.append((ChunkExport("final", final, tuple(env[n] for n in final.input_names)), False))
    return out


def write_depth_chunk(target: str, model: STDiT3, step: int, frames: int, example, root: Path, fp16: bool):
    stem = f"{step + 2:02d}-depth_{step:02d}"
    if target == "onnx":
        return video.export_depth_onnx(model, step, frames, example, root, stem)
    if target == "executorch":
        return video.export_depth_executorch(model, step, frames, example, root / f"{stem}.pte")
    return video.export_depth_coreml(model, step, frames, example, root / f"{stem}.mlpackage", fp16)


def plain_only_bytes(target: str, chunk: ChunkExport, fp16: bool) -> int:
    """Bytes of a depth chunk exported with the plain function alone (ExecuTorch / CoreML size baseline)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"plain{SUFFIX[target]}"
        write_chunk(target, chunk, path, fp16, True)
        return video.path_bytes(path)


def size_note(target: str) -> str:
    if target == "onnx":
        return "one variant = every plain graph plus the external tensors it references (exact, per chunk)"
    return "one variant = depth_00 exported again with the plain function only, counted for every depth step"


def validate_video(root: Path, model: STDiT3, shape: VideoShape, envs: dict, atol: float) -> Validation:
    """ONNX / ExecuTorch: every function of every chunk on the PyTorch chain's inputs, max abs error."""
    from edgetrim.runtime.backends import open_backend

    artifact = read_manifest(root)
    cases = []
    for chunk in artifact.chunks:
        for function in chunk.get("functions") or ["plain"]:
            env = envs[function]
            path, method = artifact.program(chunk, function)
            backend = open_backend(
                artifact.target,
                path,
                [i["name"] for i in chunk["inputs"]],
                [o["name"] for o in chunk["outputs"]],
                optimized=chunk.get("optimized") == "ort-extended",
                method=method,
            )
            got = backend.run({i["name"]: env[i["name"]].numpy() for i in chunk["inputs"]})
            err = max(float(np.abs(got[n] - env[n].numpy()).max()) for n in got)
            name = chunk["name"] + (f":{function}" if chunk.get("functions") else "")
            cases.append({"case": name, "max_abs_error": err, "passed": err <= atol})
    failed = [c for c in cases if not c["passed"]]
    if failed:
        c = failed[0]
        raise ValidationFailed(
            f"{artifact.target} chunk {c['case']} differs from PyTorch: max abs error {c['max_abs_error']:.2e} "
            f"(atol {atol:g}) - raise --atol if only slightly over, otherwise report an edgetrim bug"
        )
    return Validation("passed", max(c["max_abs_error"] for c in cases), atol, cases)


def validate_coreml_video(root: Path) -> Validation:
    """Spec check: each chunk's inputs/outputs; depth chunks list both functions with the manifest's I/O."""
    from edgetrim.export.targets.coreml import coreml_spec_summary

    artifact = read_manifest(root)
    cases, problems = [], []
    for chunk in artifact.chunks:
        want_in = {i["name"]: i["shape"] for i in chunk["inputs"]}
        want_out = [o["name"] for o in chunk["outputs"]]
        path, _ = artifact.program(chunk)
        if chunk.get("functions"):
            found = video.coreml_functions(path)
            wanted = {f["method"] for f in chunk["functions"].values()}
            if set(found) != wanted:
                problems.append(f"{chunk['name']}: functions {sorted(found)}, expected {sorted(wanted)}")
            for name, spec in found.items():
                if spec["inputs"] != want_in or spec["outputs"] != want_out:
                    problems.append(f"{chunk['name']}:{name}: I/O {spec}, expected {want_in} -> {want_out}")
            cases.append({"case": f"spec:{chunk['name']}", "functions": sorted(found)})
        else:
            spec = coreml_spec_summary(path)
            got_in = {i["name"]: i["shape"] for i in spec["inputs"]}
            if got_in != want_in or [o["name"] for o in spec["outputs"]] != want_out:
                problems.append(f"{chunk['name']}: I/O {spec['inputs']} -> {spec['outputs']}")
            cases.append({"case": f"spec:{chunk['name']}", "functions": ["main"]})
    if problems:
        raise ValidationFailed(f"CoreML spec check failed: {'; '.join(problems)} - report an edgetrim bug")
    note = (
        "CoreML prediction needs macOS: spec checked (both functions of every depth chunk, names, static "
        "shapes); numeric parity not run on this machine"
    )
    return Validation("spec-only", None, 0.0, cases, note)


def video_manifest_section(model: STDiT3, shape: VideoShape) -> dict:
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
        "fps": shape.fps,
        "caption_length": c.model_max_length,
        "caption_channels": c.caption_channels,
        "hidden_size": c.hidden_size,
        "depth": c.depth,
        "variants": list(video.VARIANTS),
        "velocity_channels": "the first in_channels of velocity are v (the rest: learned sigma, unused)",
        "null_caption": "null_caption",
        "scheduler": SCHEDULER,
        "flops": {v: video.depth_step_flops(model, shape, v == "tdtm") for v in video.VARIANTS},
    }


def export_video_artifact(opts: VideoExportOptions, step=lambda name: None) -> dict:
    """Export, validate and write a staged video-denoiser artifact; returns the report."""
    if opts.target not in TARGETS:
        raise UserError(f"--target {opts.target!r} is unknown: choose one of {', '.join(TARGETS)}")
    if opts.atol <= 0:
        raise UserError(f"--atol {opts.atol} must be positive: e.g. 1e-4")
    precision = precision_for(opts.target, opts.fp16)
    if opts.out:
        check_out_dir(Path(opts.out))
    if opts.frames is not None and opts.frames % 2:  # refuse before building a large model (full check below)
        raise UserError(f"--frames {opts.frames} is odd: TDTM merges frame pairs, pass an even count such as 20")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    step("load model")
    model, source = load_stdit3(opts.model)
    shape = latent_shape(opts, model)
    out = Path(opts.out) if opts.out else Path("artifacts") / f"{Path(source.name).name}-video-{opts.target}"
    feeds = stage_examples(model, shape)
    envs = reference_env(model, shape, feeds)
    plan = chunk_plan(model, shape, envs["plain"])
    timings["load_s"] = round(time.perf_counter() - t0, 3)
    frames = shape.tokens(model.config.patch_size)[0]
    with staging(out) as tmp:
        entries, sizes, plain_bytes = [], {"two": 0, "one": 0}, 0
        for i, (chunk, two_functions) in enumerate(plan):
            step(f"export {opts.target} ({precision}) chunk {i + 1}/{len(plan)}: {chunk.name}")
            inputs, outputs = io_spec(chunk, opts.target)
            if two_functions:
                result = write_depth_chunk(opts.target, model, i - 2, frames, chunk.example, tmp, precision == "fp16")
                files = result.files
                entry = {"name": chunk.name, "files": [file_entry(tmp, f, role) for f, role in files]}
                entry["functions"] = result.functions
            else:
                path = tmp / f"{i:02d}-{chunk.name}{SUFFIX[opts.target]}"
                files = write_chunk(opts.target, chunk, path, precision == "fp16", True)
                entry = {"name": chunk.name, "files": [file_entry(tmp, f, role) for f, role in files]}
            entry.update(inputs=inputs, outputs=outputs)
            if opts.target == "onnx":
                entry["optimized"] = "ort-extended"
            chunk_total = sum(f["bytes"] for f in entry["files"])
            sizes["two"] += chunk_total
            if not two_functions:
                sizes["one"] += chunk_total
            elif opts.target == "onnx":
                sizes["one"] += video.single_variant_bytes(tmp / entry["functions"]["plain"]["file"])
            else:
                plain_bytes = plain_bytes or plain_only_bytes(opts.target, chunk, precision == "fp16")
                sizes["one"] += plain_bytes
            entries.append(entry)
        null_path = tmp / NULL_CAPTION
        np.save(null_path, model.y_embedder.y_embedding.detach().numpy().astype(np.float32))
        timings["export_s"] = round(time.perf_counter() - t0 - sum(timings.values()), 3)
        c = model.config
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "edgetrim_version": VERSION,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "kind": "video-denoiser",
            "target": opts.target,
            "precision": precision,
            "source": {
                "kind": "preset" if source.kind == "preset" else "folder",
                "name": source.name,
                "architecture": "STDiT3",
                "random_weights": source.random_weights,
                "config": c.to_dict(),
                "has_projector": False,
                "token_dim": c.hidden_size,
            },
            "video": video_manifest_section(model, shape),
            "chunks": entries,
            "pipelines": {
                "caption": ["caption"],
                "denoiser": [e["name"] for e in entries if e["name"] != "caption"],
            },
            "files": [file_entry(tmp, null_path, "null_caption")],
        }
        write_json(tmp / MANIFEST, manifest)
        step("validate")
        if not opts.validate:
            validation = Validation("skipped", None, opts.atol, note="--no-validate")
        elif opts.target == "coreml":
            validation = validate_coreml_video(tmp)
        else:
            validation = validate_video(tmp, model, shape, envs, opts.atol)
        timings["validate_s"] = round(time.perf_counter() - t0 - sum(timings.values()), 3)
        report = {
            "artifact": str(out),
            "kind": "video-denoiser",
            "target": opts.target,
            "precision": precision,
            "model": source.name,
            "random_weights": source.random_weights,
            "latent_shape": manifest["video"]["latent_shape"],
            "tokens_per_frame": manifest["video"]["tokens_per_frame"],
            "depth": c.depth,
            "chunks": [{"name": e["name"], "bytes": sum(f["bytes"] for f in e["files"])} for e in entries],
            "artifact_bytes": sizes["two"],
            "one_variant_bytes": sizes["one"],
            "two_variant_ratio": sizes["two"] / sizes["one"],
            "size_note": size_note(opts.target),
            "flops_ratio_depth_step": video.depth_step_flops(model, shape, True)
            / video.depth_step_flops(model, shape, False),
            "validation": validation.to_dict(),
            "timings_s": timings,
        }
        write_json(tmp / "report.json", report)
    return report
