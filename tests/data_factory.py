"""Tiny image folders for tests: learnable classes plus corrupt, grey, RGBA and palette files."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Folder:
    """A generated class-per-folder tree and where its awkward files are."""

    root: Path
    classes: tuple[str, ...]
    readable: int  # readable images in total
    corrupt: Path
    grey: Path
    rgba: Path
    palette: Path


def _pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image whose class is visible: stripes in a class-specific direction."""
    y, x = np.mgrid[0:size, 0:size]
    phase = rng.integers(0, 4)
    lines = [(y + phase) // 2 % 2, (x + phase) // 2 % 2, (x + y + phase) // 2 % 2][label % 3]
    base = np.stack([lines * 200, np.roll(lines, 1, axis=0) * 120, (1 - lines) * 90], axis=-1)
    noise = rng.integers(0, 40, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_image_folder(
    root: Path,
    *,
    classes: tuple[str, ...] = ("circle", "square", "triangle"),
    per_class: int = 12,
    size: int = 16,
    seed: int = 0,
) -> Folder:
    """Write `per_class` PNGs per class under `root`, then add the awkward files.

    Added: one truncated PNG (unreadable), one grey 'L', one 'RGBA' and one palette 'P' image
    (all readable, in the first class), and a README.txt that is not an image.
    """
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_pattern(label, size, rng)).save(folder / f"{i:03d}.png")
    first = root / classes[0]
    pixels = _pattern(0, size, rng)
    grey, rgba, palette = first / "grey.png", first / "rgba.png", first / "palette.png"
    Image.fromarray(pixels).convert("L").save(grey)
    Image.fromarray(pixels).convert("RGBA").save(rgba)
    Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE).save(palette)
    buffer = io.BytesIO()
    Image.fromarray(_pattern(1, size * 4, rng)).save(buffer, format="PNG")
    corrupt = root / classes[1] / "truncated.png"
    corrupt.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "README.txt").write_text("not an image")
    (first / "notes.txt").write_text("not an image either")
    readable = per_class * len(classes) + 3
    return Folder(root, classes, readable, corrupt, grey, rgba, palette)
