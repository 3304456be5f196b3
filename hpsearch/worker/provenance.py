"""What each trial records about where it ran: host, worker, versions, git commit, artifacts."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from hpsearch.spec import LoadedSpec
from hpsearch.storage import StorageURL, default_home
from hpsearch.storage.attrs import GIT_COMMIT_ATTR, HOST_ATTR, VERSIONS_ATTR
from hpsearch.version import __version__


def versions() -> str:
    """`hpsearch 0.1.0, optuna 5.0.0, torch 2.14.1, cuda 13.0` (torch only when installed)."""
    parts = [f"hpsearch {__version__}", f"optuna {importlib.metadata.version('optuna')}"]
    try:
        parts.append(f"torch {importlib.metadata.version('torch')}")
    except importlib.metadata.PackageNotFoundError:
        pass
    torch = sys.modules.get("torch")  # CUDA's version is known only once torch is imported
    cuda = getattr(getattr(torch, "version", None), "cuda", None)
    if cuda:
        parts.append(f"cuda {cuda}")
    return ", ".join(parts)


@functools.cache
def git_commit(folder: Path) -> str | None:
    """The commit of the git checkout holding `folder`, with `+dirty` for local changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None


def worker_attrs(loaded: LoadedSpec) -> dict[str, Any]:
    """The user attributes every trial of this worker carries (the dashboard shows them)."""
    attrs: dict[str, Any] = {HOST_ATTR: socket.gethostname(), VERSIONS_ATTR: versions()}
    commit = git_commit(loaded.directory.resolve())
    if commit:
        attrs[GIT_COMMIT_ATTR] = commit
    return attrs


def artifacts_dir(
    loaded: LoadedSpec, url: StorageURL, study_name: str, override: str | Path | None
) -> Path:
    """Where checkpoints and caches of this study go on this machine.

    `--artifacts` > `artifacts:` in the file (relative to it) > `<home>/artifacts` (see
    `storage.default_home`).
    """
    if override is not None:
        base = Path(override)
    elif loaded.spec.artifacts is not None:
        base = loaded.directory / loaded.spec.artifacts
    else:
        base = default_home(loaded.directory.resolve()) / "artifacts"
    return (base / folder_name(study_name)).resolve()


def folder_name(study_name: str) -> str:
    """A study name as one safe folder name (names from `--name` or Optuna can be anything)."""
    safe = re.sub(r"[^A-Za-z0-9._@+=,:-]", "_", study_name).lstrip(".") or "study"
    if safe != study_name:  # two names mapped to the same folder must not share it
        safe += "-" + hashlib.sha256(study_name.encode()).hexdigest()[:8]
    return safe
