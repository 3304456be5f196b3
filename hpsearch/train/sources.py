"""Which images a study trains and validates on: the dataset index, the split and its checks."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpsearch.errors import DataError
from hpsearch.train.images import scan_folder
from hpsearch.train.options import DatasetOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """One side of the split: labels, plus either file paths or in-memory uint8 pixels."""

    labels: np.ndarray  # int64, shape (n,)
    files: tuple[Path, ...] = ()
    pixels: np.ndarray | None = None  # uint8, shape (n, channels, height, width)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self, num_classes: int) -> list[int]:
        """Images per class index."""
        return [int(c) for c in np.bincount(self.labels, minlength=num_classes)]


@dataclass(frozen=True)
class DatasetIndex:
    """Everything known about a dataset before any pixel is preprocessed."""

    classes: tuple[str, ...]
    train: Part
    val: Part
    sizes: Counter[tuple[int, int]]  # (width, height) -> number of images
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason) for unreadable files
    warnings: tuple[str, ...] = ()
    fingerprint: str = "digits"  # identifies the file list, for caches


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): each class contributes `val_fraction` of its images to val.

    Deterministic in (labels, val_fraction, seed), so every trial of a study sees the same split.
    A class keeps at least one training image; a class with one image has none in val.
    """
    train, val = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        # One generator per class: adding a class does not reshuffle the others.
        members = np.random.default_rng([seed, int(label)]).permutation(members)
        n_val = min(max(round(len(members) * val_fraction), 1), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _digits(options: DatasetOptions) -> DatasetIndex:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    digits = load_digits()
    # 0..16 grey levels -> 0..255 so every source reaches the model as uint8 pixels.
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    train, val = stratified_split(labels, options.val_fraction, options.split_seed)
    return DatasetIndex(
        classes=tuple(str(int(c)) for c in digits.target_names),
        train=Part(labels[train], pixels=pixels[train]),
        val=Part(labels[val], pixels=pixels[val]),
        sizes=Counter({(8, 8): len(labels)}),
    )


def _folder(options: DatasetOptions, cache_dir: Path | None) -> DatasetIndex:
    assert options.path is not None  # guaranteed by DatasetOptions
    root = Path(options.path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"`dataset.path` must be a folder with one sub-folder per class, but {str(root)!r} "
            "is not a folder; fix the path (in a study file, relative to the study file)."
        )
    scan = scan_folder(root, cache_dir=cache_dir)
    if len(scan.classes) < 2:
        raise DataError(
            f"`dataset.path` must hold at least 2 class sub-folders, but {str(scan.root)!r} has "
            f"{len(scan.classes)}; put each class's images in its own sub-folder."
        )
    files = np.array([str(scan.root / rel) for rel, _ in scan.files], dtype=object)
    labels = np.array([label for _, label in scan.files], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(scan.classes))
    for name, count in zip(scan.classes, counts, strict=True):
        if count == 0:
            raise DataError(
                f"every class folder must hold a readable image, but {str(scan.root / name)!r} "
                "has none; add images or remove the folder."
            )
    skipped = [(str(scan.root / rel), why) for rel, why in scan.bad]
    sizes = Counter(scan.sizes.values())
    fingerprint = scan.fingerprint
    if options.val_path is None:
        train_idx, val_idx = stratified_split(labels, options.val_fraction, options.split_seed)
        train = Part(labels[train_idx], files=tuple(Path(f) for f in files[train_idx]))
        val = Part(labels[val_idx], files=tuple(Path(f) for f in files[val_idx]))
    else:
        val_root = Path(options.val_path).expanduser()
        if not val_root.is_dir():
            raise DataError(
                f"`dataset.val_path` must be a folder with one sub-folder per class, but "
                f"{str(val_root)!r} is not a folder; fix the path or remove `val_path`."
            )
        val_scan = scan_folder(val_root, cache_dir=cache_dir)
        unknown = sorted(set(val_scan.classes) - set(scan.classes))
        if unknown:
            raise DataError(
                f"`dataset.val_path` classes must also be in `dataset.path`, but {unknown} are "
                f"not in {str(scan.root)!r}; rename or remove those folders."
            )
        position = {name: i for i, name in enumerate(scan.classes)}
        val_labels = [position[val_scan.classes[label]] for _, label in val_scan.files]
        train = Part(labels, files=tuple(Path(f) for f in files))
        val_files = tuple(val_scan.root / rel for rel, _ in val_scan.files)
        val = Part(np.array(val_labels, dtype=np.int64), files=val_files)
        skipped += [(str(val_scan.root / rel), why) for rel, why in val_scan.bad]
        sizes.update(val_scan.sizes.values())
        fingerprint += val_scan.fingerprint
    return DatasetIndex(scan.classes, train, val, sizes, tuple(skipped), fingerprint=fingerprint)


def _warnings(index: DatasetIndex, options: DatasetOptions) -> tuple[str, ...]:
    found = []
    if index.skipped:
        shown = ", ".join(path for path, _ in index.skipped[:5])
        more = f" and {len(index.skipped) - 5} more" if len(index.skipped) > 5 else ""
        found.append(f"skipped {len(index.skipped)} unreadable image(s): {shown}{more}")
    counts = index.train.counts(len(index.classes))
    largest, smallest = max(counts), max(min(counts), 1)
    if largest / smallest > options.max_imbalance:
        found.append(
            f"classes are imbalanced: the largest has {largest} training images and the "
            f"smallest {min(counts)} (ratio {largest / smallest:.1f} > `max_imbalance` "
            f"{options.max_imbalance:g}); watch `val_balanced_accuracy`"
        )
    val_counts = index.val.counts(len(index.classes))
    empty = [name for name, n in zip(index.classes, val_counts, strict=True) if n == 0]
    if empty:
        found.append(f"no validation image for class(es) {', '.join(empty[:10])}")
    return tuple(found)


def build_index(options: DatasetOptions, *, cache_dir: Path | None = None) -> DatasetIndex:
    """Find, check and split the dataset; problems the user must fix raise `DataError`."""
    index = _digits(options) if options.name == "digits" else _folder(options, cache_dir)
    if len(index.val) == 0:
        raise DataError(
            "the validation split must hold at least one image, but it is empty; raise "
            "`dataset.val_fraction` or add images."
        )
    warnings = _warnings(index, options)
    for line in warnings:
        if line not in _said:  # a worker builds the index for every trial: say it once
            _said.add(line)
            logger.warning(line)
    return dataclasses.replace(index, warnings=warnings)


_said: set[str] = set()  # the dataset warnings this process has logged


def resolve_image_size(options: DatasetOptions, index: DatasetIndex) -> int:
    """`image_size`, else the native size: the shorter side when all images share one size."""
    if options.image_size is not None:
        return options.image_size
    if len(index.sizes) != 1:
        common = ", ".join(f"{w}x{h}" for (w, h), _ in index.sizes.most_common(3))
        raise DataError(
            f"`dataset.image_size` must be set when images differ in size, but found "
            f"{len(index.sizes)} sizes (most common: {common}); set e.g. `image_size: 224`."
        )
    width, height = next(iter(index.sizes))
    return min(width, height)
