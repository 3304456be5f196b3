"""How much room a study's checkpoints take: this machine's artifacts folder, the shared store."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hpsearch.errors import HpsearchError
from hpsearch.inspect.source import StudyView
from hpsearch.spec import FileSystemStore
from hpsearch.storage.artifacts import open_store
from hpsearch.train.resume_files import folder_size
from hpsearch.worker.provenance import artifacts_dir


def checkpoint_usage(view: StudyView, artifact_ids: Iterable[str]) -> dict[str, Any]:
    """Bytes of best-epoch and resume checkpoints here (`artifacts:` or the default folder) and,
    for a file-system store, of the study's artifacts still in it (an S3 store is not listed:
    its `shared_bytes` is None)."""
    local = artifacts_dir(view.loaded, view.url, view.name, None)
    usage: dict[str, Any] = {
        "local_dir": str(local),
        "local_bytes": folder_size(local / "checkpoints") + folder_size(local / "resume"),
        "shared": None,
        "shared_bytes": None,
    }
    try:
        shared = open_store(view.loaded, writable=False)
    except HpsearchError:  # no boto3 here, an unreadable mount: status still shows the rest
        return usage
    if shared is None:
        return usage
    usage["shared"] = shared.base
    if isinstance(shared.spec, FileSystemStore):
        base = Path(shared.base)
        files = (base / i for i in set(artifact_ids))
        usage["shared_bytes"] = sum(f.stat().st_size for f in files if f.is_file())
    return usage
