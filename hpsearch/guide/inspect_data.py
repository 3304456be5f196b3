"""What `hpsearch init` learns from an image folder: classes, counts, sizes, modes, bad files."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from hpsearch.train.options import DatasetOptions
from hpsearch.train.sources import build_index
from hpsearch.train.walk import open_regular

# PIL modes whose pixels are one grey channel (with or without alpha).
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
MODE_SAMPLE = 200  # files whose header is read for their mode: enough to tell grey from colour


@dataclass(frozen=True)
class DataFacts:
    """An image folder as training will see it (the same index, split and checks)."""

    root: Path
    classes: tuple[str, ...]
    train_counts: tuple[int, ...]
    val_counts: tuple[int, ...]
    sizes: Counter[tuple[int, int]]  # (width, height) -> images
    skipped: tuple[tuple[str, str], ...]  # (path, why) of unreadable files
    modes: Counter[str]  # PIL modes of a sample of the readable files
    val_fraction: float

    @property
    def num_train(self) -> int:
        return sum(self.train_counts)

    @property
    def num_val(self) -> int:
        return sum(self.val_counts)

    @property
    def num_images(self) -> int:
        return self.num_train + self.num_val

    @property
    def short_side(self) -> int:
        """The median shorter side over all readable images, in pixels."""
        return median_short_side(self.sizes)

    @property
    def one_size(self) -> bool:
        return len(self.sizes) == 1

    @property
    def grey_share(self) -> float:
        total = sum(self.modes.values())
        return sum(n for m, n in self.modes.items() if m in GREY_MODES) / max(total, 1)

    @property
    def imbalance(self) -> float:
        """Training images of the largest class per image of the smallest."""
        return max(self.train_counts) / max(min(self.train_counts), 1)

    def lines(self) -> list[str]:
        """What was found, for the comment at the top of the study file."""
        counts = sorted(t + v for t, v in zip(self.train_counts, self.val_counts, strict=True))
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(3))
        more = f" and {len(self.sizes) - 3} more sizes" if len(self.sizes) > 3 else ""
        modes = ", ".join(f"{m} {n}" for m, n in self.modes.most_common())
        out = [
            f"{len(self.classes)} classes, {self.num_images} readable images "
            f"({counts[0]} to {counts[-1]} per class; imbalance {self.imbalance:.1f}x)",
            f"image sizes: {sizes}{more}; median shorter side {self.short_side} px",
            f"modes of {sum(self.modes.values())} sampled files: {modes}",
        ]
        if self.skipped:
            shown = ", ".join(Path(p).name for p, _ in self.skipped[:3])
            extra = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            out.append(f"{len(self.skipped)} unreadable file(s) will be skipped: {shown}{extra}")
        return out


def median_short_side(sizes: Counter[tuple[int, int]] | dict[tuple[int, int], int]) -> int:
    """The median shorter side of images counted by (width, height)."""
    items = sorted((min(w, h), n) for (w, h), n in sizes.items())
    half, seen = sum(n for _, n in items) / 2, 0
    for side, n in items:
        seen += n
        if seen >= half:
            return side
    raise ValueError("no image sizes to take a median of")


def _sample_modes(files: list[Path]) -> Counter[str]:
    step = max(1, len(files) // MODE_SAMPLE)
    modes: Counter[str] = Counter()
    for path in files[::step][:MODE_SAMPLE]:
        try:
            with os.fdopen(open_regular(path), "rb") as f, Image.open(f) as image:  # the header
                modes[image.mode] += 1
        except OSError:
            continue  # already counted among the unreadable files
    return modes


def inspect_folder(root: Path, *, val_fraction: float = 0.2) -> DataFacts:
    """Index, check and split `root` as the trainer will; `DataError` for what stops training."""
    options = DatasetOptions(path=str(root), val_fraction=val_fraction)
    index = build_index(options)
    num_classes = len(index.classes)
    files = [*index.train.files, *index.val.files]
    return DataFacts(
        root=root,
        classes=index.classes,
        train_counts=tuple(index.train.counts(num_classes)),
        val_counts=tuple(index.val.counts(num_classes)),
        sizes=index.sizes,
        skipped=index.skipped,
        modes=_sample_modes(sorted(files)),
        val_fraction=val_fraction,
    )
