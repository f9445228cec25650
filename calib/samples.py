"""Sample images for validation and demos: procedural, seeded (no dataset download on these machines).

Each has structure HiRED can latch onto (objects on a background, edges, texture) at a
non-square aspect ratio, so the AnyRes fit-and-pad path is exercised too.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def sample_image(seed: int, width: int = 640, height: int = 480) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 37.0 + yy / 53.0)], -1)
    img = Image.fromarray((base * rng.uniform(90, 200, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = rng.integers(0, width - 60), rng.integers(0, height - 60)
        w, h = rng.integers(30, width // 3), rng.integers(30, height // 3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=colour, outline=(255, 255, 255), width=3)
    noise = rng.normal(0, 12, (height, width, 3))
    arr = np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.SMOOTH)


def sample_images(count: int, seed: int = 0) -> list[Image.Image]:
    sizes = [(640, 480), (480, 640), (800, 450), (512, 512)]
    return [sample_image(seed + i, *sizes[i % len(sizes)]) for i in range(count)]
