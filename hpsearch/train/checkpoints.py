"""Best-epoch checkpoints: atomic saves with a score sidecar, one name per trial, removal."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

SIDECAR_SUFFIX = ".json"


def sidecar(path: Path) -> Path:
    """`model.pt` -> `model.pt.json`: the score file next to a checkpoint."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def atomic_write(path: Path, write: Any) -> None:
    """`write(tmp)`, then rename `tmp` to `path`."""
    # Write then rename: a reader (an upload to the shared store, a user copying the winner)
    # never sees half a file, and a crash leaves the previous version intact.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module | Mapping[str, Any],
    options: Mapping[str, Any],
    metrics: Mapping[str, float],
    classes: Sequence[str],
    preprocessing: Mapping[str, Any],
    monitor: str,
    mode: str,
) -> None:
    """Save weights, the options that produced them and the metrics, then the sidecar score.

    The sidecar is written last, so a checkpoint with a sidecar is always complete.
    `preprocessing` (image size, channels, mean, std) is what inference must repeat.
    `model`: the module, or its state dict (a resumed trial's best epoch, kept on the CPU).
    """
    import torch  # here, not at the top: naming and removing checkpoints needs no torch

    weights = model if isinstance(model, Mapping) else model.state_dict()
    state = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
    payload = {
        "model": state,
        "options": dict(options),
        "metrics": dict(metrics),
        "classes": list(classes),
        "preprocessing": dict(preprocessing),
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    score = {"score": metrics[monitor], "monitor": monitor, "mode": mode}
    atomic_write(sidecar(path), lambda tmp: tmp.write_text(json.dumps(score)))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The saved dict (`model`, `options`, `metrics`, `classes`, `preprocessing`), on the CPU."""
    import torch

    loaded: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return loaded


def checkpoint_path(directory: Path, number: int) -> Path:
    """`<directory>/trial-00012.pt`: the one name a trial's checkpoint has on every machine."""
    return directory / f"trial-{number:05d}.pt"


_NAME = re.compile(r"trial-(\d+)\.pt")


def trial_checkpoints(directory: Path) -> dict[int, Path]:
    """The checkpoints in `directory`, by trial number (temporary and foreign files left out)."""
    found = {}
    for path in directory.glob("trial-*.pt"):
        match = _NAME.fullmatch(path.name)
        if match is not None:
            found[int(match.group(1))] = path
    return found


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint and its sidecar; one another worker already deleted is no error."""
    path.unlink(missing_ok=True)
    sidecar(path).unlink(missing_ok=True)
