"""AnyRes preprocessing with a static grid, in numpy + Pillow (the exporter validates with the same code).

Views: the full image squashed to S x S, then the image fitted into (gh*S) x (gw*S) keeping its
aspect ratio, padded with black, centred (LLaVA-NeXT's resize-and-pad) and cut into gh x gw
cells, row-major. Bicubic resampling, pixels scaled to [0, 1], then (x - mean) / std.
Returns float32 [1, P, 3, S, S], P = 1 + gh*gw (P = 1 for a 1x1 grid).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgetrim.runtime.errors import UserError


def load_image(path: str | Path) -> Image.Image:
    """An RGB image; refuses missing, unreadable and oversized files (Pillow's decompression-bomb limit)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"image {p} does not exist: pass a path to a PNG or JPEG file")
    try:
        with Image.open(p) as img:
            return img.convert("RGB")
    except Image.DecompressionBombError:
        raise UserError(
            f"image {p} has more than {2 * Image.MAX_IMAGE_PIXELS} pixels, too large to decode safely: "
            "downscale it (every view is resized to the model's input size anyway)"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(
            f"cannot read image {p} ({type(exc).__name__}): pass a PNG, JPEG or other Pillow-readable file"
        ) from None


def fit_and_pad(image: Image.Image, width: int, height: int) -> Image.Image:
    scale = min(width / image.width, height / image.height)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    canvas = Image.new("RGB", (width, height))
    canvas.paste(image.resize((w, h), Image.Resampling.BICUBIC), ((width - w) // 2, (height - h) // 2))
    return canvas


def views(image: Image.Image, size: int, grid: tuple[int, int]) -> list[Image.Image]:
    """The P images fed to the encoder: full view, then the cells row-major."""
    out = [image.resize((size, size), Image.Resampling.BICUBIC)]
    gh, gw = grid
    if gh * gw > 1:
        canvas = fit_and_pad(image, gw * size, gh * size)
        for r in range(gh):
            for c in range(gw):
                out.append(canvas.crop((c * size, r * size, (c + 1) * size, (r + 1) * size)))
    return out


def normalize(img: Image.Image, mean, std) -> np.ndarray:
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return x.transpose(2, 0, 1)


def preprocess(image: Image.Image, size: int, grid: tuple[int, int], mean, std) -> np.ndarray:
    return np.stack([normalize(v, mean, std) for v in views(image, size, grid)])[None].astype(np.float32)
