"""Shared pieces of the guide's tests: data and machine facts, a stand-in timing probe."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision import models as tv

from hpsearch.guide import DataFacts, MachineFacts, Speed
from hpsearch.guide.weights import weights_status

CPU = MachineFacts("cpu", "cpu", 16 * 2**30, 0, 2)
BIG_GPU = MachineFacts("cuda", "NVIDIA H100", 80 * 2**30, 1, 16)


def photos(
    root: Path, *, per_class: int = 400, size: tuple[int, int] = (500, 375), grey: bool = False
) -> DataFacts:
    """Facts about a folder of photos in three classes (the files need not exist)."""
    n_val = per_class // 5
    return DataFacts(
        root=root,
        classes=("cat", "dog", "fox"),
        train_counts=(per_class - n_val,) * 3,
        val_counts=(n_val,) * 3,
        sizes=Counter({size: 3 * per_class}),
        skipped=(),
        modes=Counter({"L" if grey else "RGB": 200}),
        val_fraction=0.2,
    )


def fixed_speed(
    monkeypatch: pytest.MonkeyPatch, per_image: Callable[[Any, int], float] | float = 1e-3
) -> list[tuple[str, int]]:
    """Replace the timing probe by a speed per (options, image size); returns what was timed."""
    timed: list[tuple[str, int]] = []

    def measure(options: Any, *, image_size: int, **_: Any) -> Speed:
        timed.append((options.model, image_size))
        seconds = per_image(options, image_size) if callable(per_image) else per_image
        return Speed(seconds, seconds / 3, True, "cpu", options.batch_size)

    monkeypatch.setattr("hpsearch.guide.choose.measure", measure)
    return timed


def cache_fake_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model: str) -> Path:
    """Put a state_dict of `model` (random values) where torch.hub looks for its weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = weights_status(model, timeout=0.1).path
    path.parent.mkdir(parents=True, exist_ok=True)
    builder = {
        "resnet18": tv.resnet18, "mobilenet_v3_small": tv.mobilenet_v3_small,
        "efficientnet_b0": tv.efficientnet_b0, "convnext_tiny": tv.convnext_tiny,
    }[model]  # fmt: skip
    torch.save(builder().state_dict(), path)
    return path
