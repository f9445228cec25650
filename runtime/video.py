"""Text-to-video denoising on a ``video-denoiser`` artifact, torch-free for ONNX.

``VideoDenoiser`` runs the ``caption`` pipeline once per prompt (conditional caption and the null
caption for classifier-free guidance) and the ``denoiser`` pipeline (embed, depth steps, final) once
per sampling step through a ``ChunkLoader`` under a memory budget; depth chunks run their ``tdtm``
or ``plain`` function as the sampler asks. Sessions are lean by default (memory-mapped weights, no
per-session arena): each depth chunk has two sessions, and default arenas grew to ~12 GB on the mid
preset. With an export batch of 2 the conditional and
unconditional halves go through in one call, with batch 1 in two calls.

Caption embeddings (T5 features): ``.npy`` [L', C_cap] or [1, L', C_cap], or ``.npz`` with
``caption`` (or its first array) and optional ``mask`` [L'] / [1, L']; L' <= the exported length L,
shorter captions are zero-padded and masked. The null caption takes the conditional mask, as
Open-Sora 1.2 does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetrim.runtime import contract
from edgetrim.runtime.chunks import ChunkLoader
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import Artifact, open_artifact
from edgetrim.runtime.sampler import LeapRule, SampleResult, sample, shift_ratio, timesteps

DENOISER_INPUTS = [contract.LATENT, contract.TIMESTEP, contract.CAPTION_TOKENS, contract.CAPTION_MASK]


@dataclass
class Caption:
    embeds: np.ndarray  # [L, C_cap] float32
    mask: np.ndarray  # [L] float32, 1 keep, 0 pad


def fit_caption(embeds: np.ndarray, mask: np.ndarray | None, length: int, channels: int, source: str) -> Caption:
    """Check a caption embedding against the export and pad it to L tokens."""
    embeds = np.asarray(embeds, dtype=np.float32)
    if embeds.ndim == 3 and embeds.shape[0] == 1:
        embeds = embeds[0]
    if embeds.ndim != 2:
        raise UserError(f"{source} has shape {list(embeds.shape)}: pass caption embeddings [L, {channels}]")
    if embeds.shape[1] != channels:
        raise UserError(
            f"{source} has width {embeds.shape[1]}, the artifact takes {channels}-wide caption embeddings "
            "(T5 features): encode the caption with the matching text encoder"
        )
    if not 1 <= embeds.shape[0] <= length:
        raise UserError(
            f"{source} has {embeds.shape[0]} tokens, the artifact takes 1..{length}: truncate the caption to {length}"
        )
    given = np.ones(embeds.shape[0], np.float32) if mask is None else np.asarray(mask, np.float32).reshape(-1)
    if given.shape[0] != embeds.shape[0]:
        raise UserError(f"{source}: mask has {given.shape[0]} entries for {embeds.shape[0]} tokens: save matching ones")
    padded = np.zeros((length, channels), np.float32)
    padded[: embeds.shape[0]] = embeds
    full = np.zeros(length, np.float32)
    full[: embeds.shape[0]] = given
    if full.sum() < 1:
        raise UserError(f"{source}: the mask keeps no token: keep at least one caption token")
    return Caption(padded, full)


def load_caption(path: Path, length: int, channels: int) -> Caption:
    """A caption embedding file (.npy / .npz, see module doc) -> Caption padded to L."""
    if not path.is_file():
        raise UserError(f"`caption` {path} does not exist: pass a .npy or .npz of caption embeddings")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"`caption` {path} is not a numpy file ({exc}): save it with numpy.save / savez") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        if not data.files:
            raise UserError(f"`caption` {path} is an empty .npz: store the embeddings under 'caption'")
        embeds = data["caption"] if "caption" in data.files else data[data.files[0]]
        mask = data["mask"] if "mask" in data.files else None
        return fit_caption(embeds, mask, length, channels, f"`caption` {path}")
    return fit_caption(data, None, length, channels, f"`caption` {path}")


def random_caption(length: int, channels: int, seed: int) -> Caption:
    """A seeded stand-in for T5 features (unit-variance, all tokens kept): for demos and benchmarks."""
    rng = np.random.default_rng(seed + 1)
    return Caption(rng.standard_normal((length, channels)).astype(np.float32) * 0.1, np.ones(length, np.float32))


class VideoDenoiser:
    """A verified video-denoiser artifact (a folder, or an ``Artifact`` already read) with its caption and
    denoiser loaders."""

    def __init__(
        self, artifact: str | Path | Artifact, memory_budget_mb: float | None = None, overlap: bool = True, **loader
    ) -> None:
        self.artifact = (
            artifact if isinstance(artifact, Artifact) else open_artifact(artifact, (contract.VIDEO_DENOISER,))
        )
        self.video = self.artifact.manifest["video"]
        loader.setdefault("lean", True)  # two functions per depth chunk: per-session arenas would double memory
        self.captioner = ChunkLoader(self.artifact, None, pipeline=contract.CAPTION, **loader)
        self.loader = ChunkLoader(
            self.artifact, memory_budget_mb, overlap, pipeline=contract.DENOISER, inputs=DENOISER_INPUTS, **loader
        )
        self.batch = self.video["batch"]
        self.null = np.load(self.artifact.data_file(contract.NULL_CAPTION), allow_pickle=False).astype(np.float32)

    @property
    def latent_shape(self) -> list[int]:
        """[C_in, T, H, W] of one sample."""
        return self.video["latent_shape"][1:]

    def caption_shape(self) -> tuple[int, int]:
        return self.video["caption_length"], self.video["caption_channels"]

    def encode_caption(self, caption: Caption) -> tuple[np.ndarray, np.ndarray]:
        """-> (conditional, null) projected captions, each [L, C]."""
        stacked = np.stack([caption.embeds, self.null])
        out = []
        for i in range(0, 2, self.batch):
            batch = stacked[i : i + self.batch]
            out.append(self.captioner.run({contract.CAPTION_EMBEDS: batch})[contract.CAPTION_TOKENS])
        both = np.concatenate(out)
        return both[0], both[1]

    def guided_velocity(self, y_cond: np.ndarray, y_null: np.ndarray, mask: np.ndarray, guidance: float):
        """-> velocity(z [C, T, H, W], t, function) = v_u + g (v_c - v_u), from the first C_in channels."""
        c_in = self.video["in_channels"]
        captions, masks = np.stack([y_cond, y_null]), np.stack([mask, mask])

        def velocity(z: np.ndarray, t: float, function: str) -> np.ndarray:
            outs = []
            for i in range(0, 2, self.batch):
                feeds = {
                    contract.LATENT: np.repeat(z[None], self.batch, axis=0).astype(np.float32),
                    contract.TIMESTEP: np.full(self.batch, t, np.float32),
                    contract.CAPTION_TOKENS: captions[i : i + self.batch],
                    contract.CAPTION_MASK: masks[i : i + self.batch],
                }
                outs.append(self.loader.run(feeds, function=function)[contract.VELOCITY][:, :c_in])
            cond, uncond = np.concatenate(outs)
            return uncond + np.float32(guidance) * (cond - uncond)

        return velocity

    def schedule(self, num_steps: int) -> np.ndarray:
        (ph, pw), frames = self.video["pixel_size"], self.video["pixel_frames"]
        return timesteps(num_steps, shift_ratio(ph, pw, frames, self.video["scheduler"]["base_resolution"]))

    def generate(
        self,
        caption: Caption,
        num_steps: int = 30,
        merge_steps: int = 0,
        leap_at: int | None = None,
        rule: LeapRule | None = None,
        guidance: float | None = None,
        seed: int = 0,
        progress=lambda i: None,
        noise: np.ndarray | None = None,
    ) -> SampleResult:
        """Sample a latent video [C_in, T, H, W] from ``noise`` (default: seeded standard normal)."""
        if noise is None:
            noise = np.random.default_rng(seed).standard_normal(self.latent_shape).astype(np.float32)
        elif list(noise.shape) != self.latent_shape:
            raise UserError(
                f"the initial latent has shape {list(noise.shape)}, the artifact was exported for {self.latent_shape} "
                "[C, T, H, W]: pass a matching latent or re-export with `frames` / `height` / `width`"
            )
        y_cond, y_null = self.encode_caption(caption)
        g = self.video["scheduler"]["cfg_scale"] if guidance is None else guidance
        velocity = self.guided_velocity(y_cond, y_null, caption.mask, g)
        return sample(velocity, noise, self.schedule(num_steps), merge_steps, leap_at, rule, progress=progress)

    def close(self) -> None:
        self.captioner.close()
        self.loader.close()

    def __enter__(self) -> VideoDenoiser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def contact_sheet(latent: np.ndarray, path: Path, tile: int = 96) -> Path:
    """PNG grid: one row per latent channel, one column per frame (tiles ~``tile`` px, nearest-neighbour),
    each channel min-max normalized over all its frames."""
    from PIL import Image

    c, t, h, w = latent.shape
    scale = max(1, tile // max(h, w))
    pad = 2
    sheet = np.full((c * (h * scale + pad) + pad, t * (w * scale + pad) + pad), 255, np.uint8)
    for ci in range(c):
        lo, hi = float(latent[ci].min()), float(latent[ci].max())
        tiles = ((latent[ci] - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
        for ti in range(t):
            tile = np.kron(tiles[ti], np.ones((scale, scale), np.uint8))
            y, x = pad + ci * (h * scale + pad), pad + ti * (w * scale + pad)
            sheet[y : y + h * scale, x : x + w * scale] = tile
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path)
    return path


def load_noise(path: Path) -> np.ndarray:
    """An initial latent [C, T, H, W] from a .npy file."""
    if not path.is_file():
        raise UserError(f"`noise` {path} does not exist: pass a .npy latent [C, T, H, W]")
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (ValueError, OSError) as exc:
        raise UserError(f"`noise` {path} is not a .npy file ({exc}): save it with numpy.save") from None


def write_outputs(result: SampleResult, out: Path, random_weights: bool) -> tuple[dict, list[Path]]:
    """latent.npy and contact_sheet.png under ``out``; returns (the sampling's record for run.json, paths)."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "latent.npy", result.latent)
    contact_sheet(result.latent, out / "contact_sheet.png")
    record = {
        "latent_shape": list(result.latent.shape),
        "steps_run": result.steps_run,
        "leap_step": result.leap_step,
        "functions": result.functions,
        "step_ms": result.step_ms,
        "cosine_similarities": result.similarities,
        "random_weights": random_weights,
    }
    return record, [out / "latent.npy", out / "contact_sheet.png"]
