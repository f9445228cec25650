"""Calibration data: the images and prompts quantized exports are gated (and calibrated) on.

``--calib-images DIR`` (every readable image in it, by name) and ``--calib-prompts FILE`` (one prompt a
line); without them the built-in set: procedural sample images (``samples.sample_images``) and
``DEFAULT_PROMPTS``, so exports of the embedded defaults work offline. ``digest`` names the set in
reports and manifests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from edgetrim.calib.samples import sample_images
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.preprocess import load_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_IMAGES = 4
DEFAULT_PROMPTS = (
    "Describe the image in one sentence.",
    "What is the largest object in the picture?",
    "How many shapes can you see?",
    "What colors dominate the scene?",
)


@dataclass
class CalibrationSet:
    """Images (RGB) with their names, prompts, and the files of the folder that could not be read."""

    images: list[Image.Image]
    image_names: list[str]
    prompts: list[str]
    source: str  # "built-in" or the folder / file given
    skipped: list[str] = field(default_factory=list)

    def digest(self) -> str:
        """sha256 over every image's RGB pixels (with its size) and every prompt."""
        h = hashlib.sha256()
        for img in self.images:
            h.update(f"{img.width}x{img.height}".encode())
            h.update(img.tobytes())
        for prompt in self.prompts:
            h.update(prompt.encode() + b"\n")
        return h.hexdigest()

    def describe(self) -> dict:
        return {
            "source": self.source,
            "images": len(self.images),
            "prompts": len(self.prompts),
            "skipped": self.skipped,
            "sha256": self.digest(),
        }


def read_images(folder: Path) -> tuple[list[Image.Image], list[str], list[str]]:
    """Every image file of ``folder`` by name: (images, names, skipped files with the reason)."""
    if not folder.is_dir():
        raise UserError(f"`calib_images` {folder} is not a folder: pass a folder of calibration images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(
            f"`calib_images` {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): add some or drop `calib_images`"
        )
    images, names, skipped = [], [], []
    for path in files:
        try:
            images.append(load_image(path))
            names.append(path.name)
        except UserError as exc:  # unreadable: skipped and said, refused below if none are left
            skipped.append(f"{path.name}: {exc}")
    if not images:
        raise UserError(
            f"`calib_images` {folder}: none of its {len(files)} images can be read (first: {skipped[0]}): "
            "pass readable PNG / JPEG files"
        )
    return images, names, skipped


def read_prompts(path: Path) -> list[str]:
    """One prompt a line; blank lines ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"`calib_prompts` {path} cannot be read ({exc}): pass a UTF-8 text file, one prompt a line"
        ) from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"`calib_prompts` {path} holds no prompts: write one prompt a line")
    return prompts


def calibration_set(images: Path | None, prompts: Path | None) -> CalibrationSet:
    """The given folder / file, else the built-in images and prompts."""
    if images is None:
        imgs, names, skipped = sample_images(DEFAULT_IMAGES), [f"sample-{i}" for i in range(DEFAULT_IMAGES)], []
    else:
        imgs, names, skipped = read_images(Path(images))
    texts = list(DEFAULT_PROMPTS) if prompts is None else read_prompts(Path(prompts))
    source = "built-in" if images is None and prompts is None else ", ".join(str(p) for p in (images, prompts) if p)
    return CalibrationSet(imgs, names, texts, source, skipped)
