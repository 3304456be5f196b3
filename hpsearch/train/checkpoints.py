"""Best-epoch checkpoints: atomic saves with a score sidecar, and pruning to the best N."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

SIDECAR_SUFFIX = ".json"


def sidecar(path: Path) -> Path:
    """`model.pt` -> `model.pt.json`: the score file next to a checkpoint."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _atomic_write(path: Path, write: Any) -> None:
    # Write then rename: a reader (keep_best_checkpoints in another worker, a user copying the
    # winner) never sees half a file, and a crash leaves the previous version intact.
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
    model: nn.Module,
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
    """
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    payload = {
        "model": state,
        "options": dict(options),
        "metrics": dict(metrics),
        "classes": list(classes),
        "preprocessing": dict(preprocessing),
    }
    _atomic_write(path, lambda tmp: torch.save(payload, tmp))
    score = {"score": metrics[monitor], "monitor": monitor, "mode": mode}
    _atomic_write(sidecar(path), lambda tmp: tmp.write_text(json.dumps(score)))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The saved dict (`model`, `options`, `metrics`, `classes`, `preprocessing`), on the CPU."""
    loaded: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return loaded


def _score(path: Path) -> float | None:
    try:
        value = json.loads(path.read_text())["score"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # being written or deleted by another worker: not ours to judge now
    return float(value) if isinstance(value, int | float) else None


def keep_best_checkpoints(directory: Path, keep: int, *, mode: str) -> list[Path]:
    """Delete all but the `keep` best checkpoints in `directory` by sidecar score.

    Checkpoints without a readable sidecar are left alone (still being written, or not ours).
    A NaN score ranks last. Safe to run from several workers at once: files another worker
    already deleted are ignored. Returns the kept checkpoints, best first.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"`mode` must be 'max' or 'min', but got {mode!r}.")
    if keep < 0:
        raise ValueError(f"`keep` must be >= 0, but got {keep}.")
    scored = []
    for side in directory.glob(f"*{SIDECAR_SUFFIX}"):
        checkpoint = side.with_name(side.name[: -len(SIDECAR_SUFFIX)])
        score = _score(side)
        if score is None or not checkpoint.is_file():
            continue
        rank = -math.inf if math.isnan(score) else (score if mode == "max" else -score)
        scored.append((rank, checkpoint.name, checkpoint))
    # Ties go to the earlier name, so every worker agrees on which file to keep.
    scored.sort(key=lambda item: (-item[0], item[1]))
    for _, _, checkpoint in scored[keep:]:
        checkpoint.unlink(missing_ok=True)
        sidecar(checkpoint).unlink(missing_ok=True)
    return [checkpoint for _, _, checkpoint in scored[:keep]]
