"""Kept-token overlay: every view side by side, dropped patches dimmed, kept ones outlined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def kept_cells(positions: np.ndarray, side: int) -> list[tuple[int, int, int]]:
    """Flat kept positions p*N + row*side + col -> (partition p, row, col), N = side^2."""
    n = side * side
    return [(int(p) // n, int(p) % n // side, int(p) % side) for p in positions]


def kept_overlay(views: list[Image.Image], positions: np.ndarray, side: int, out: Path, scale: int = 1) -> Path:
    """``views``: the P encoder views; ``positions``: [K] flat p*N + row*side + col."""
    size = views[0].width * scale
    n = side * side
    pad, label = 8, 18
    canvas = Image.new("RGB", (len(views) * (size + pad) + pad, size + label + pad), (30, 30, 30))
    draw = ImageDraw.Draw(canvas)
    cell = size / side
    cells = kept_cells(positions, side)
    for p, view in enumerate(views):
        kept = np.zeros(n, bool)
        for _, row, col in (c for c in cells if c[0] == p):
            kept[row * side + col] = True
        base = np.asarray(view.resize((size, size), Image.Resampling.NEAREST), dtype=np.float32)
        rows = (np.arange(size) // cell).astype(int).clip(0, side - 1)
        mask = kept.reshape(side, side)[rows][:, rows]
        dimmed = np.where(mask[..., None], base, base * 0.25)
        x0 = pad + p * (size + pad)
        canvas.paste(Image.fromarray(dimmed.astype(np.uint8)), (x0, label))
        for idx in np.flatnonzero(kept):
            r, c = divmod(int(idx), side)
            draw.rectangle(
                [x0 + c * cell, label + r * cell, x0 + (c + 1) * cell - 1, label + (r + 1) * cell - 1],
                outline=(255, 210, 0),
            )
        name = "full view" if p == 0 else f"cell {p}"
        draw.text((x0, 3), f"{name}: {int(kept.sum())} kept", fill=(230, 230, 230))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
