"""Resume checkpoint files: names, the checksum sidecar, and one folder's latest whole one.

No torch here (the worker's start and `hpsearch status` need none): what a file holds is
`hpsearch.train.resume`'s business. A checkpoint is written under a temporary name and renamed,
and only then its checksum sidecar (`epoch-00006.pt.sha256`) is written the same way: a file
whose sidecar is missing or does not match (a worker killed mid-write, a truncated copy) is
never loaded, and the one before it is, with one warning line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from hpsearch.train.checkpoints import atomic_write

_log = logging.getLogger(__name__)
DIGEST_SUFFIX = ".sha256"
_NAME = re.compile(r"epoch-(\d+)\.pt")
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


def folder_size(folder: Path) -> int:
    """Bytes under `folder` (0 when it does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
