"""Latent video -> frames on a ``video-decoder`` artifact, torch-free for ONNX.

``DecoderRunner`` follows the manifest's ``decoder.plan``: the ``temporal`` pipeline once per micro-frame chunk of
latent frames, each step running the function its plan entry names (``contract.temporal_function``: the full
chunk's, e.g. ``latents_5``, then a shorter last chunk's, e.g. ``latents_2``, over the same weights), then
``spatial`` once per micro-batch of the decoded frames (the last padded with zero frames, dropped after). Every
tensor is 4-D, frames in time order: ``latent_chunk`` [k, C, h, w] -> ``frame_latents`` [f, C, h, w];
``frame_batch`` [N, C, h, w] -> ``frames`` [N, 3, 8h, 8w]. Each pipeline runs through a ``ChunkLoader`` under the
memory budget; under a budget only the running function's backends stay loaded (a function's sessions pack its
weights for it alone) and a pipeline's chunks are released when its phase ends, so temporal and spatial chunks are
never loaded together. Sessions are lean (no per-session arena): a micro-batch of the spatial decoder is the
activation peak of the decode. A plan step that names no function runs each chunk's one program.

Frames leave as Open-Sora saves videos (``OUTPUT_RULE``); ``write_video`` writes ``video.mp4`` (H.264 through PyAV,
whose wheels bundle FFmpeg) and ``video.gif`` (Pillow; the only video when PyAV is missing).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from edgetrim.runtime import contract
from edgetrim.runtime.chunks import ChunkLoader
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import Artifact, open_artifact

OUTPUT_RULE = "frames float about [-1, 1] -> uint8 [T, H, W, 3]: clamp to [-1, 1], (x + 1) / 2 * 255 + 0.5, truncated"
VIDEO, GIF, RUN = "video.mp4", "video.gif", "run.json"
NO_PYAV = "PyAV is missing (pip install av): wrote video.gif only"
OPEN_SORA_MICRO_FRAMES = (17, 5)  # video -> latent frames of a micro-frame chunk, for denoisers that do not say


def to_uint8(video: np.ndarray) -> np.ndarray:
    """float [T, 3, H, W] -> uint8 [T, H, W, 3] (``OUTPUT_RULE``, Open-Sora's save_sample)."""
    scaled = (np.clip(video, -1.0, 1.0) + 1.0) / 2.0 * 255.0 + 0.5
    return np.clip(scaled, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def fit_latent(latent: np.ndarray, decoder: dict, source: str = "the latent") -> np.ndarray:
    """A latent [C, T, h, w] or [1, C, T, h, w] checked against the decoder's static shape -> float32 [C, T, h, w]."""
    _, channels, frames, height, width = decoder["latent_shape"]
    z = np.asarray(latent, dtype=np.float32)
    if z.ndim == 5 and z.shape[0] == 1:
        z = z[0]
    if z.ndim != 4:
        raise UserError(f"{source} has shape {list(np.shape(latent))}: pass a latent [{channels}, T, h, w] or [1, ...]")
    if z.shape[0] != channels:
        raise UserError(
            f"{source} has {z.shape[0]} channels, the decoder takes {channels}-channel latents: "
            "decode it with the VAE trained with its denoiser"
        )
    if list(z.shape[1:]) != [frames, height, width]:
        t, h, w = z.shape[1:]
        raise UserError(
            f"{source} has {t} x {h} x {w} latent frames x height x width, the decoder was exported for "
            f"{frames} x {height} x {width}: re-export it with `frames` {t} `height` {h} `width` {w}"
        )
    return z


def load_latent(path: Path) -> np.ndarray:
    """A latent .npy file (a denoiser run's latent.npy: [C, T, h, w])."""
    if not path.is_file():
        raise UserError(
            f"`latent` {path} does not exist: pass a .npy latent [C, T, h, w] (a denoiser run's latent.npy)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"`latent` {path} is not a .npy file ({exc}): save it with numpy.save") from None


def check_pair(denoiser: Artifact, decoder: Artifact) -> None:
    """Refuse a decoder artifact that cannot decode a denoiser artifact's latents: other latent channels, another
    temporal factor (latent frames per micro-frame chunk of video frames) or another latent geometry (both are
    static-shape). The runtime's side of the family's ``check_denoiser_match``, on the two manifests."""
    video, dec = denoiser.manifest["video"], decoder.manifest["decoder"]
    if video["in_channels"] != dec["latent_channels"]:
        raise UserError(
            f"the decoder {decoder.root} decodes {dec['latent_channels']}-channel latents but the denoiser makes "
            f"{video['in_channels']} ({denoiser.root}): pass the VAE trained with this denoiser"
        )
    size, latents = OPEN_SORA_MICRO_FRAMES
    assumed = (video.get("micro_frame_size", size), video.get("micro_latent_frames", latents))
    if (dec["micro_frame_size"], dec["micro_latent_frames"]) != assumed:
        raise UserError(
            f"the decoder {decoder.root} maps {dec['micro_frame_size']} video frames to {dec['micro_latent_frames']} "
            f"latent frames (temporal factor {dec['time_factor']}) but the denoiser assumes {assumed[0]} -> "
            f"{assumed[1]} ({denoiser.root}): pass the VAE trained with this denoiser"
        )
    fit_latent(np.zeros(video["latent_shape"][1:], np.float32), dec, f"the denoiser {denoiser.root}'s latent")


@dataclass
class Decoded:
    """One decode: ``video`` float32 [T, 3, H, W] (about [-1, 1]), per-chunk ``stage_ms`` ({invocations,
    compute_ms, load_ms}), the ``timeline`` of load / compute events (ms from the decode's start) and
    ``total_ms``."""

    video: np.ndarray
    stage_ms: dict[str, dict]
    timeline: list[dict]
    total_ms: float
    memory: dict[str, str] = field(default_factory=dict)  # pipeline -> its loader's plan

    @property
    def frames(self) -> np.ndarray:
        """uint8 [T, H, W, 3]."""
        return to_uint8(self.video)


class DecoderRunner:
    """A verified video-decoder artifact (a folder, or an ``Artifact`` already read) with a loader per pipeline
    (the temporal one runs each plan step's function)."""

    def __init__(
        self, artifact: str | Path | Artifact, memory_budget_mb: float | None = None, overlap: bool = True, **loader
    ) -> None:
        self.artifact = (
            artifact if isinstance(artifact, Artifact) else open_artifact(artifact, (contract.VIDEO_DECODER,))
        )
        self.decoder = self.artifact.manifest["decoder"]
        self.budget = memory_budget_mb
        loader.setdefault("lean", True)
        self.options = {"overlap": overlap, **loader}
        self.functions = {}  # pipeline -> the function its loader checks first (its first step's)
        for step in self.decoder["plan"]:
            self.functions.setdefault(step["pipeline"], step.get("function"))
        self.loaders = {pipeline: self._loader(pipeline) for pipeline in self.functions}

    def _loader(self, pipeline: str) -> ChunkLoader:
        return ChunkLoader(
            self.artifact, self.budget, pipeline=pipeline, function=self.functions[pipeline], **self.options
        )

    def _end_phase(self, pipeline: str, t0: float, stage_ms: dict, timeline: list) -> None:
        """Collect the phase's events; under a budget release its chunks (a fresh loader for the next decode)."""
        loader = self.loaders[pipeline]
        for event in list(loader.timeline.events):
            if event.end < t0:
                continue
            ms = (event.end - event.start) * 1e3
            row = stage_ms[event.chunk]
            row[f"{event.kind}_ms"] += ms
            row["invocations"] += event.kind == "compute"
            timeline.append(
                {
                    "pipeline": pipeline,
                    "chunk": event.chunk,
                    "kind": event.kind,
                    "start_ms": (event.start - t0) * 1e3,
                    "end_ms": (event.end - t0) * 1e3,
                }
            )
        if self.budget is not None:
            loader.close()
            self.loaders[pipeline] = self._loader(pipeline)

    @staticmethod
    def _switch(loader: ChunkLoader, function: str | None) -> None:
        """Under a budget, before running ``function``: release the backends of the pipeline's other functions
        (each packs the weights for itself) and settle a prefetch of another function (the previous step's next
        invocation), so one function's sessions are live at a time."""
        loader.retain(function)
        for key in [k for k in loader.pending if k != loader._key(k[0], function)]:
            future = loader.pending.pop(key)
            if not future.cancel():  # already loading: wait for it (its backend, or error, is dropped unused)
                future.exception()

    def decode_video(self, latent: np.ndarray) -> Decoded:
        """latent [C, T, h, w] or [1, C, T, h, w] -> Decoded (float video [T_video, 3, 8h, 8w] and timings)."""
        z = fit_latent(latent, self.decoder)
        frames = z.transpose(1, 0, 2, 3)  # [T, C, h, w]
        stage_ms: dict = defaultdict(lambda: {"invocations": 0, "compute_ms": 0.0, "load_ms": 0.0})
        timeline: list[dict] = []
        memory = {name: loader.plan.describe() for name, loader in self.loaders.items()}
        t0 = time.perf_counter()
        *temporal, spatial = self.decoder["plan"]
        decoded, start = [], 0
        for i, step in enumerate(temporal):
            k, loader, function = step["latent_frames"], self.loaders[step["pipeline"]], step.get("function")
            if self.budget is not None:
                self._switch(loader, function)
            for _ in range(step["invocations"]):
                chunk = np.ascontiguousarray(frames[start : start + k])
                decoded.append(loader.run({contract.LATENT_CHUNK: chunk}, function=function)[contract.FRAME_LATENTS])
                start += k
            if i + 1 == len(temporal) or temporal[i + 1]["pipeline"] != step["pipeline"]:
                self._end_phase(step["pipeline"], t0, stage_ms, timeline)
        x = np.concatenate(decoded)
        total, n = len(x), spatial["frames"]
        x = np.concatenate([x, np.zeros((spatial["padding_frames"], *x.shape[1:]), np.float32)])
        loader = self.loaders[spatial["pipeline"]]
        parts = [loader.run({contract.FRAME_BATCH: x[i : i + n]})[contract.FRAMES] for i in range(0, len(x), n)]
        self._end_phase(spatial["pipeline"], t0, stage_ms, timeline)
        video = np.concatenate(parts)[:total]
        return Decoded(video, dict(stage_ms), timeline, (time.perf_counter() - t0) * 1e3, memory)

    def decode(self, latent: np.ndarray) -> np.ndarray:
        """latent [C, T, h, w] or [1, C, T, h, w] float32 -> frames uint8 [T_video, 8h, 8w, 3]."""
        return self.decode_video(latent).frames

    def close(self) -> None:
        for loader in self.loaders.values():
            loader.close()

    def __enter__(self) -> DecoderRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(frames: np.ndarray, out: Path, fps: float) -> tuple[list[Path], str]:
    """uint8 [T, H, W, 3] -> ``video.mp4`` (H.264, yuv420p, through PyAV) and ``video.gif`` (Pillow) under ``out``;
    returns (paths written, a note: empty, or why the mp4 is missing)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(frame) for frame in frames]
    gif = out / GIF
    images[0].save(gif, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    try:
        import av
    except ImportError:
        return [gif], NO_PYAV
    mp4 = out / VIDEO
    with av.open(str(mp4), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return [mp4, gif], ""


def run(root: Path, latent_path: Path | None, out: Path | None, memory_budget_mb: float | None = None) -> dict:
    """Decode a latent .npy into ``video.mp4`` + ``video.gif`` + ``run.json`` under ``out`` (default DIR/run)."""
    if latent_path is None:
        raise UserError(f"{root} is a video decoder: pass `latent` PATH (a .npy latent, e.g. a denoiser run's)")
    latent = load_latent(latent_path)
    with DecoderRunner(root, memory_budget_mb) as runner:
        fit_latent(latent, runner.decoder, f"`latent` {latent_path}")
        result = runner.decode_video(latent)
        artifact = runner.artifact
    frames = result.frames
    out = out or Path(root) / "run"
    written, note = write_video(frames, out, runner.decoder["fps"])
    record = {
        "latent": str(latent_path),
        "latent_shape": runner.decoder["latent_shape"],
        "frames_shape": list(frames.shape),
        "fps": runner.decoder["fps"],
        "total_ms": result.total_ms,
        "stage_ms": result.stage_ms,
        "memory_budget_mb": memory_budget_mb,
        "memory": result.memory,
        "timeline": result.timeline,
        "random_weights": artifact.random_weights,
        "note": note,
    }
    (out / RUN).write_text(json.dumps(record, indent=2) + "\n")
    return {
        "manifest": artifact.manifest,
        "result": result,
        "record": record,
        "written": [*map(str, written), str(out / RUN)],
    }
