"""Run a reduced vision-encoder artifact on an image: verify, preprocess, execute, report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from edgetrim.runtime import contract
from edgetrim.runtime.backends import Providers
from edgetrim.runtime.chunks import ChunkLoader
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import Artifact, open_artifact
from edgetrim.runtime.overlay import kept_overlay
from edgetrim.runtime.preprocess import load_image, preprocess, views


@dataclass
class VisionResult:
    tokens: np.ndarray  # [1, K, D]
    positions: np.ndarray  # [1, K] flat p*N + row*n + col
    partition_budgets: np.ndarray  # [1, P]
    timings_ms: dict[str, float] = field(default_factory=dict)


class VisionEncoder:
    """A verified artifact with its chunks ready to run; ``encode(image)`` -> VisionResult.

    ``memory_budget_mb``: keep only what fits resident and stream the other chunks (see ChunkLoader).
    """

    def __init__(
        self, root: str | Path, providers: Providers | None = None, memory_budget_mb: float | None = None
    ) -> None:
        t0 = time.perf_counter()
        self.artifact: Artifact = open_artifact(root, (contract.VISION_ENCODER,))
        t1 = time.perf_counter()
        self.loader = ChunkLoader(self.artifact, memory_budget_mb, providers=providers)
        self.loader.warm()
        t2 = time.perf_counter()
        self.load_ms = {"verify_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3}

    @property
    def preprocessing(self) -> dict:
        return self.artifact.manifest["preprocessing"]

    def views(self, image: Image.Image) -> list[Image.Image]:
        pp = self.preprocessing
        return views(image, pp["image_size"], tuple(pp["grid"]))

    def pixel_values(self, image: Image.Image) -> np.ndarray:
        pp = self.preprocessing
        return preprocess(image, pp["image_size"], tuple(pp["grid"]), pp["mean"], pp["std"])

    def run(self, pixel_values: np.ndarray) -> VisionResult:
        t0 = time.perf_counter()
        out = self.loader.run({contract.PIXEL_VALUES: pixel_values})
        ms = (time.perf_counter() - t0) * 1e3
        tokens, positions, budgets = (out[n] for n in (contract.TOKENS, contract.POSITIONS, contract.PARTITION_BUDGETS))
        return VisionResult(tokens, positions, budgets, {"inference_ms": ms})

    def encode(self, image: Image.Image | str | Path) -> VisionResult:
        img = image if isinstance(image, Image.Image) else load_image(image)
        t0 = time.perf_counter()
        x = self.pixel_values(img)
        pre_ms = (time.perf_counter() - t0) * 1e3
        result = self.run(x)
        result.timings_ms = {"preprocess_ms": pre_ms, **result.timings_ms}
        return result


def run(
    root: Path, image: Path, overlay: Path | None = None, json_path: Path | None = None, memory_budget_mb=None
) -> dict:
    """Encode ``image``; write the kept-token ``overlay`` PNG and the ``json_path`` record when asked.
    Returns what a summary shows."""
    if overlay and overlay.suffix.lower() != ".png":
        raise UserError(f"`overlay` {overlay} must end in .png: e.g. kept.png")
    picture = load_image(image)
    encoder = VisionEncoder(root, memory_budget_mb=memory_budget_mb)
    result = encoder.encode(picture)
    m = encoder.artifact.manifest
    timings = {**encoder.load_ms, **result.timings_ms}
    record = {
        "tokens": int(result.positions.shape[1]),
        "partition_budgets": result.partition_budgets[0].tolist(),
        "positions": result.positions[0].tolist(),
        "timings_ms": timings,
        "graph_cache": dict(encoder.loader.graph_cache),  # ONNX: how many programs came from the cache (hit)
    }
    written = []
    if overlay:
        pp = m["preprocessing"]
        scale = max(1, 224 // pp["image_size"])
        written.append(
            kept_overlay(encoder.views(picture), result.positions[0], pp["patches_per_side"], overlay, scale)
        )
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(record, indent=2))
        written.append(json_path)
    return {
        "manifest": m,
        "plan": f"{len(encoder.loader.names)}: {encoder.loader.plan.describe()}",
        "token_shape": list(result.tokens.shape),
        **record,
        "written": [str(p) for p in written],
    }
