"""The data summary `hpsearch validate` prints: classes, counts, image sizes, skipped files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpsearch.train.options import DatasetOptions
from hpsearch.train.sources import build_index, resolve_image_size

_MAX_CLASSES_SHOWN = 20
_MAX_SKIPPED_SHOWN = 5


@dataclass(frozen=True)
class DataSummary:
    """What `summarize` found; `lines()` renders it for the terminal."""

    source: str
    classes: tuple[str, ...]
    train_counts: tuple[int, ...]
    val_counts: tuple[int, ...]
    sizes: tuple[tuple[tuple[int, int], int], ...]  # ((width, height), images), most common first
    image_size: int  # the side images are resized and cropped to
    skipped: tuple[tuple[str, str], ...]  # (path, reason)
    warnings: tuple[str, ...]

    @property
    def num_train(self) -> int:
        """Training images (after skipping unreadable ones)."""
        return sum(self.train_counts)

    @property
    def num_val(self) -> int:
        """Validation images (after skipping unreadable ones)."""
        return sum(self.val_counts)

    def lines(self) -> list[str]:
        """Short human-readable lines, warnings last."""
        out = [
            f"data: {self.source}: {len(self.classes)} classes, {self.num_train} train / "
            f"{self.num_val} val images, resized to {self.image_size}x{self.image_size}"
        ]
        shown = [
            f"{name} {train}/{val}"
            for name, train, val in zip(
                self.classes, self.train_counts, self.val_counts, strict=True
            )
        ]
        more = len(shown) - _MAX_CLASSES_SHOWN
        tail = f", ... ({more} more)" if more > 0 else ""
        out.append(f"  classes (train/val): {', '.join(shown[:_MAX_CLASSES_SHOWN])}{tail}")
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes)
        out.append(f"  image sizes seen: {sizes}")
        for path, reason in self.skipped[:_MAX_SKIPPED_SHOWN]:
            out.append(f"  skipped {path}: {reason}")
        if len(self.skipped) > _MAX_SKIPPED_SHOWN:
            out.append(f"  skipped {len(self.skipped) - _MAX_SKIPPED_SHOWN} more unreadable files")
        out.extend(f"  warning: {line}" for line in self.warnings)
        return out


def summarize(dataset: DatasetOptions, *, cache_dir: Path | None = None) -> DataSummary:
    """Index, check and split the dataset as training will, without building a model.

    Raises `DataError` for every problem that would stop training (no classes, an empty class,
    mixed image sizes without `image_size`, ...); milder problems become `warnings`.
    """
    index = build_index(dataset, cache_dir=cache_dir)
    num_classes = len(index.classes)
    source = "digits (scikit-learn, 8x8 grey)" if dataset.name else str(dataset.path)
    return DataSummary(
        source=source,
        classes=index.classes,
        train_counts=tuple(index.train.counts(num_classes)),
        val_counts=tuple(index.val.counts(num_classes)),
        sizes=tuple(index.sizes.most_common(5)),
        image_size=resolve_image_size(dataset, index),
        skipped=index.skipped,
        warnings=index.warnings,
    )
