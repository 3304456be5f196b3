"""Training and validation batches for one trial: decoded images, loaders, normalisation."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from hpsearch.train.images import load_image
from hpsearch.train.options import TrainerOptions
from hpsearch.train.runtime import use_channels_last
from hpsearch.train.sources import DatasetIndex, Part, build_index, resolve_image_size
from hpsearch.train.transforms import BatchTransform, channel_stats, imagenet_stats

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]  # (uint8 images (N, C, H, W), int64 labels (N,))
# Decode an image folder once per trial into memory when it fits: PIL then runs once per image
# instead of once per image per epoch. Larger datasets stream from disk through a DataLoader.
PRELOAD_BYTES = 1 << 30
_STATS_SAMPLE = 2000  # images used for `normalize: dataset` when streaming from disk
_STATS_VERSION = 1


class Loader(Protocol):
    """What the loop needs from a loader: batches per epoch and an iterator over them."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...


@dataclass(frozen=True)
class Data:
    """Everything the loop needs to train one trial on one dataset."""

    classes: tuple[str, ...]
    train: Loader
    val: Loader
    transform: BatchTransform
    num_train: int
    in_channels: int
    image_size: int
    index: DatasetIndex

    def preprocessing(self) -> dict[str, Any]:
        """What inference must repeat: saved with every checkpoint."""
        return {
            "image_size": self.image_size,
            "channels": self.in_channels,
            "mean": self.transform.mean.flatten().tolist(),
            "std": self.transform.std.flatten().tolist(),
        }


class TensorLoader:
    """Batches sliced from in-memory tensors; reshuffled each epoch from a seeded generator."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
    ) -> None:
        self.images, self.labels, self.batch_size, self.shuffle = (
            images,
            labels,
            batch_size,
            shuffle,
        )
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        # drop_last=False: the last, partial batch is trained on too.
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for start in range(0, n, self.batch_size):
            chosen = order[start : start + self.batch_size]
            yield self.images[chosen], self.labels[chosen]


class FileImages(Dataset[tuple[torch.Tensor, int]]):
    """Images decoded from disk on demand (in DataLoader workers on CUDA)."""

    def __init__(self, part: Part, *, channels: int, size: int) -> None:
        self.files, self.labels = part.files, part.labels
        self.channels, self.size = channels, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # Files were all decoded once when indexed; one that broke since then (changed on disk)
        # must not crash the trial, so it is replaced by its neighbour and logged.
        for offset in range(len(self.files)):
            i = (index + offset) % len(self.files)
            try:
                pixels = load_image(self.files[i], channels=self.channels, size=self.size)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                logger.warning("skipping unreadable image %s: %s", self.files[i], e)
                continue
            return torch.from_numpy(pixels), int(self.labels[i])
        raise OSError(f"no image of {len(self.files)} could be read")


def _decode_all(files: Sequence[Path], *, channels: int, size: int) -> torch.Tensor:
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 2)) as pool:
        arrays = list(pool.map(lambda f: load_image(f, channels=channels, size=size), files))
    if not arrays:
        return torch.zeros((0, channels, size, size), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays))


def _pixels_in_memory(pixels: np.ndarray, *, channels: int, size: int) -> torch.Tensor:
    """Resize in-memory uint8 pixels (digits) to `size` and `channels`, still uint8."""
    x = torch.from_numpy(pixels)
    if x.shape[-1] != size:
        resized = F.interpolate(
            x.float(),
            size=(size, size),
            mode="bilinear",
            antialias=size < x.shape[-1],
            align_corners=False,
        )
        x = resized.round_().clamp_(0, 255).to(torch.uint8)
    return x.expand(-1, channels, -1, -1).contiguous() if x.shape[1] != channels else x


def _stats_key(options: TrainerOptions, index: DatasetIndex, size: int) -> str:
    d = options.dataset
    key = (
        _STATS_VERSION,
        index.fingerprint,
        d.val_path,
        d.val_fraction,
        d.split_seed,
        size,
        options.in_channels,
    )
    return hashlib.sha256(repr(key).encode()).hexdigest()[:16]


def dataset_stats(
    options: TrainerOptions,
    index: DatasetIndex,
    size: int,
    *,
    train_images: torch.Tensor | None,
    cache_dir: Path | None,
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training split, cached as JSON in `cache_dir`."""
    cache = (
        None if cache_dir is None else cache_dir / f"stats-{_stats_key(options, index, size)}.json"
    )
    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        return list(saved["mean"]), list(saved["std"])
    if train_images is not None:
        mean, std = channel_stats(list(train_images.split(1024)))
    else:
        # A fixed sample, not the whole split: the statistics settle long before that.
        rng = np.random.default_rng(0)
        sample = rng.permutation(len(index.train))[:_STATS_SAMPLE]
        files = [index.train.files[i] for i in sorted(sample)]
        mean, std = channel_stats([_decode_all(files, channels=options.in_channels, size=size)])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"mean": mean, "std": std}))
        os.replace(tmp, cache)  # atomic: concurrent workers never read half a file
    return mean, std


def _memory_loaders(
    index: DatasetIndex, options: TrainerOptions, *, size: int, device: torch.device
) -> tuple[TensorLoader, TensorLoader, torch.Tensor]:
    channels = options.in_channels
    train_x, val_x = (
        _pixels_in_memory(part.pixels, channels=channels, size=size)
        if part.pixels is not None
        else _decode_all(part.files, channels=channels, size=size)
        for part in (index.train, index.val)
    )
    # Small enough to live on the GPU: no host-to-device copy per batch.
    store = device if device.type == "cuda" else torch.device("cpu")
    train_y, val_y = torch.from_numpy(index.train.labels), torch.from_numpy(index.val.labels)
    train = TensorLoader(
        train_x.to(store), train_y.to(store), options.batch_size, shuffle=True, seed=options.seed
    )
    val = TensorLoader(val_x.to(store), val_y.to(store), options.batch_size, shuffle=False)
    return train, val, train_x


def _file_loader(
    part: Part, options: TrainerOptions, *, size: int, device: torch.device, shuffle: bool
) -> DataLoader[tuple[torch.Tensor, int]]:
    cuda = device.type == "cuda"
    workers = options.num_workers
    if workers is None:  # CPU training needs the cores itself; CUDA needs them to decode
        workers = min(8, os.cpu_count() or 1) if cuda else 0
    return DataLoader(
        FileImages(part, channels=options.in_channels, size=size),
        batch_size=options.batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(options.seed) if shuffle else None,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
        drop_last=False,  # the last, partial batch is trained on too
    )


def load_data(
    options: TrainerOptions, *, device: torch.device, cache_dir: Path | None = None
) -> Data:
    """Index the dataset, decode or stream its images, and build both loaders for one trial."""
    index = build_index(options.dataset, cache_dir=cache_dir)
    size, channels = resolve_image_size(options.dataset, index), options.in_channels
    decoded_bytes = (len(index.train) + len(index.val)) * channels * size * size
    train: Loader
    val: Loader
    if index.train.pixels is not None or decoded_bytes <= PRELOAD_BYTES:
        train, val, train_images = _memory_loaders(index, options, size=size, device=device)
        stats_source: torch.Tensor | None = train_images
    else:
        train = _file_loader(index.train, options, size=size, device=device, shuffle=True)
        val = _file_loader(index.val, options, size=size, device=device, shuffle=False)
        stats_source = None
    if options.dataset.normalize == "dataset":
        mean, std = dataset_stats(
            options, index, size, train_images=stats_source, cache_dir=cache_dir
        )
    elif options.dataset.normalize == "imagenet":
        mean, std = (list(v) for v in imagenet_stats(channels))
    else:
        mean, std = [0.0] * channels, [1.0] * channels
    channels_last = use_channels_last(options.channels_last, options.model, device)
    transform = BatchTransform(
        mean, std, augment=options.dataset.augment, channels_last=channels_last
    )
    return Data(index.classes, train, val, transform, len(index.train), channels, size, index)
