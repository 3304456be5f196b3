"""What the framework callbacks share: the metrics as numbers, the checkpoint, the extras."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hpsearch.errors import HpsearchError


def require(module: str, extra: str) -> None:
    """Raise one line naming the extra when a framework's package is missing.

    Raises:
        HpsearchError: `pip install 'hpsearch[EXTRA]'`.
    """
    if importlib.util.find_spec(module) is None:
        raise HpsearchError(
            f"hpsearch.integrations.{extra} needs the {module} package, which is not installed; "
            f"pip install 'hpsearch[{extra}]'"
        )


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among a framework's metrics (tensors of one value included)."""
    numbers: dict[str, float] = {}
    for name, value in metrics.items():
        if hasattr(value, "numel") and value.numel() == 1:  # a torch tensor of one value
            value = value.item()
        if isinstance(value, int | float) and not isinstance(value, bool):
            numbers[name] = float(value)
    return numbers


def keep(report: Callable[..., None], path: str | Path | None) -> None:
    """Name the trial's checkpoint, when `report` is hpsearch's (a plain callable has no
    `keep_checkpoint`) and the checkpoint exists."""
    keep_checkpoint = getattr(report, "keep_checkpoint", None)
    if keep_checkpoint is not None and path and Path(path).exists():
        keep_checkpoint(path)
