"""Resume checkpoints: a trial's whole training state at the end of an epoch, verified on load.

A resume checkpoint holds what the next epoch needs to run exactly as if the trial had never
stopped: the model, optimizer, LR schedule and grad scaler, every random generator (Python,
NumPy, torch's CPU and CUDA ones, and the one that shuffles the training data) and the epochs
reported so far. It is written to a temporary name, renamed, and only then its checksum sidecar
(`epoch-00006.pt.sha256`) is written, the same way: a file whose sidecar is missing or does not
match (a worker killed mid-write, a truncated copy) is never loaded, and the one before it is.
Where the files live and who else gets a copy (a shared artifact store) is the objective's
business: it hands `fit` a `ResumeFolder` or something that behaves like one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from hpsearch.train.checkpoints import atomic_write

_log = logging.getLogger(__name__)
DIGEST_SUFFIX = ".sha256"
_NAME = re.compile(r"epoch-(\d+)\.pt")
FORMAT = 1  # bumped when the saved dict changes shape; an older file is not loaded
KEEP = 2  # the latest and the one before it, for when the latest turns out corrupt


def file_name(epoch: int) -> str:
    """`epoch-00006.pt`: the resume checkpoint written after epoch 6."""
    return f"epoch-{epoch:05d}.pt"


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def epoch_of(name: str) -> int | None:
    """The epoch of a resume checkpoint's file name, or None for any other file."""
    match = _NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path) -> str | None:
    """Why `path` must not be loaded (no sidecar, checksum mismatch), or None when it is whole."""
    side = digest_path(path)
    if not path.is_file() or not side.is_file():
        return "its checksum file is missing (written only after the checkpoint is complete)"
    try:
        expected = json.loads(side.read_text())["sha256"]
    except (ValueError, KeyError, TypeError):
        return "its checksum file is unreadable"
    if sha256(path) != expected:
        return "its checksum does not match (a truncated or damaged copy)"
    return None


class ResumeStore(Protocol):
    """Where `fit` saves its resume state and finds the latest one (see the module docstring)."""

    def latest(self) -> Path | None:
        """The newest whole resume checkpoint, or None: the trial starts at epoch 1."""
        ...

    def save(self, epoch: int, write: Callable[[Path], None]) -> None:
        """Write epoch `epoch`'s checkpoint with `write(path)`, atomically and verified."""
        ...


class ResumeFolder:
    """Resume checkpoints in one local folder, the latest `KEEP` of them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def epochs(self) -> list[int]:
        """The epochs with a checkpoint file here (whole or not), newest first."""
        if not self.folder.is_dir():
            return []
        found = (epoch_of(p.name) for p in self.folder.iterdir())
        return sorted((e for e in found if e is not None), reverse=True)

    def latest(self) -> Path | None:
        return first_whole(self.folder, self.epochs())

    def save(self, epoch: int, write: Callable[[Path], None]) -> None:
        path = self.folder / file_name(epoch)
        atomic_write(path, write)
        body = json.dumps({"sha256": sha256(path), "epoch": epoch})
        atomic_write(digest_path(path), lambda tmp: tmp.write_text(body))
        for old in self.epochs()[KEEP:]:
            self.remove(old)

    def remove(self, epoch: int) -> None:
        path = self.folder / file_name(epoch)
        digest_path(path).unlink(missing_ok=True)  # the sidecar first: never a stale "whole"
        path.unlink(missing_ok=True)


def first_whole(folder: Path, epochs: list[int]) -> Path | None:
    """The first of `epochs` (newest first) whose checkpoint in `folder` verifies; one warning
    line when a newer one had to be skipped."""
    for i, epoch in enumerate(epochs):
        path = folder / file_name(epoch)
        problem = verify(path)
        if problem is None:
            if i:
                _log.warning(
                    "resume checkpoint %s skipped: %s; resuming after epoch %d instead",
                    folder / file_name(epochs[0]), _problem(folder, epochs[0]), epoch,
                )  # fmt: skip
            return path
    if epochs:
        _log.warning(
            "resume checkpoint %s skipped: %s; no earlier one, starting at epoch 1",
            folder / file_name(epochs[0]), _problem(folder, epochs[0]),
        )  # fmt: skip
    return None


def _problem(folder: Path, epoch: int) -> str:
    return verify(folder / file_name(epoch)) or "unreadable"


# --- the state itself -------------------------------------------------------------------------


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """Every generator's state, in types that `torch.load(weights_only=True)` reads."""
    version, words, gauss = random.getstate()
    key, array, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(array, np.ndarray)  # the legacy form is a tuple, never a dict
    return {
        "python": [version, list(words), gauss],
        "numpy": [key, torch.from_numpy(array.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "data": None if generator is None else generator.get_state(),
    }


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator | None) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    key, array, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((key, array.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state["data"] is not None:
        generator.set_state(state["data"])


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved dict on the CPU, or None (one warning) when it is of another format."""
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        _log.warning("resume checkpoint %s is of another hpsearch version; starting over", path)
        return None
    return state
