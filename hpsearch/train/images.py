"""Image files: find them in a class-per-folder tree, check each is readable, decode to arrays."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from hpsearch.train.walk import class_files, open_regular, warn_skipped

logger = logging.getLogger(__name__)

# The extensions torchvision's ImageFolder accepts; other files (README, .DS_Store) are ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_SCAN_VERSION = 1  # bump when the cached scan format or the readability check changes


@dataclass(frozen=True)
class FolderScan:
    """A class-per-folder tree: readable files per class, unreadable files, and image sizes."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[tuple[str, int], ...]  # (path relative to root, class index), readable only
    bad: tuple[tuple[str, str], ...]  # (path relative to root, reason)
    sizes: dict[str, tuple[int, int]]  # relative path -> (width, height), readable only
    fingerprint: str  # changes when any file is added, removed or modified


def list_classes(root: Path) -> tuple[str, ...]:
    """Sub-folder names of `root` in sorted order; hidden folders are ignored."""
    return tuple(
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    )


def _list_files(root: Path, classes: Iterable[str]) -> list[tuple[str, int, int, int]]:
    """(relative path, class index, size in bytes, mtime in ns) for every image file, sorted."""
    found = []
    skipped: Counter[str] = Counter()
    for index, name in enumerate(classes):
        for path, stat in class_files(root, root / name, IMAGE_EXTENSIONS, skipped):
            rel = path.relative_to(root).as_posix()
            found.append((rel, index, stat.st_size, stat.st_mtime_ns))
    warn_skipped(root, skipped)
    return sorted(found)


_Checked = tuple[int, int] | str  # (width, height) of a readable image, else why it is not


def _check(path: Path) -> _Checked:
    """The image's (width, height), or why it cannot be used.

    A full decode (`load`), not just `verify`: a truncated JPEG passes `verify` and fails only
    when its pixels are read, which would otherwise happen mid-trial.
    """
    try:
        with os.fdopen(open_regular(path), "rb") as f, Image.open(f) as image:
            size = image.size
            image.load()
        return size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}".splitlines()[0][:200]


def scan_folder(root: Path, *, cache_dir: Path | None = None) -> FolderScan:
    """List and check every image under `root`, reusing the cached result when nothing changed.

    Decoding every file once is the price of never crashing mid-trial; the result is cached in
    `cache_dir` under a key made of every file's path, size and modification time.
    """
    root = root.resolve()
    classes = list_classes(root)
    listing = _list_files(root, classes)
    digest = hashlib.sha256(repr((_SCAN_VERSION, str(root), classes, listing)).encode())
    fingerprint = digest.hexdigest()[:16]
    cached = _read_cache(cache_dir, fingerprint)
    if cached is None:
        # Decoding releases the GIL, so threads check several files at once. On SIGTERM (an
        # exception here) the files not started are dropped rather than waited for.
        pool = ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 2))
        try:
            results = list(pool.map(_check, (root / rel for rel, *_ in listing)))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        cached = {rel: result for (rel, *_), result in zip(listing, results, strict=True)}
        _write_cache(cache_dir, fingerprint, cached)
    files, bad, sizes = [], [], {}
    for rel, label, *_ in listing:
        result = cached[rel]
        if isinstance(result, str):
            bad.append((rel, result))
        else:
            files.append((rel, label))
            sizes[rel] = (int(result[0]), int(result[1]))
    return FolderScan(root, classes, tuple(files), tuple(bad), sizes, fingerprint)


def _cache_file(cache_dir: Path, fingerprint: str) -> Path:
    return cache_dir / f"scan-{fingerprint}.json"


def _read_cache(cache_dir: Path | None, fingerprint: str) -> dict[str, _Checked] | None:
    if cache_dir is None or not _cache_file(cache_dir, fingerprint).is_file():
        return None
    try:
        raw = json.loads(_cache_file(cache_dir, fingerprint).read_text())
    except (OSError, ValueError):
        return None  # a damaged cache is only a lost shortcut
    return {rel: (v if isinstance(v, str) else (int(v[0]), int(v[1]))) for rel, v in raw.items()}


def _write_cache(cache_dir: Path | None, fingerprint: str, results: dict[str, _Checked]) -> None:
    if cache_dir is None:
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = _cache_file(cache_dir, fingerprint)
    # Write then rename: workers sharing the cache never read a half-written file.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results))
    os.replace(tmp, target)


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to "L" or "RGB"; transparent pixels become white rather than black."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image if image.mode == mode else image.convert(mode)


def load_image(path: Path, *, channels: int, size: int | None) -> np.ndarray:
    """Decode one file to a uint8 array of shape (channels, size, size).

    The shorter side is resized to `size`, then the centre square is cropped (torchvision's
    `Resize(size)` + `CenterCrop(size)`); `size=None` keeps the native size, cropped square.
    """
    mode = "L" if channels == 1 else "RGB"
    with os.fdopen(open_regular(path), "rb") as raw, Image.open(raw) as file:
        if size is not None:
            # JPEG only: decode at a reduced scale (still >= size), much faster for photos.
            file.draft(mode, (size, size))
        image = _to_mode(ImageOps.exif_transpose(file), mode)
    width, height = image.size
    side = min(width, height) if size is None else size
    if min(width, height) != side:
        scale = side / min(width, height)
        new = (max(side, round(width * scale)), max(side, round(height * scale)))
        image = image.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0)
        width, height = new
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    # A writable copy: a view of PIL's buffer is read-only, which torch warns about.
    array = np.array(image, dtype=np.uint8)
    return np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
