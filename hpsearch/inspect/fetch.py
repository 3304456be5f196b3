"""`hpsearch best --download DIR`: a trial's checkpoint, fetched from wherever it is kept.

From the shared artifact store when the trial uploaded it there (any machine that reaches the
store can fetch it), else from this machine's artifacts folder when it was trained here. Every
way it can be out of reach is one line that says where it is and what to do.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from optuna.artifacts import ArtifactMeta, download_artifact, get_all_artifact_meta
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from hpsearch.errors import HpsearchError
from hpsearch.inspect.source import StudyView
from hpsearch.storage.artifacts import ARTIFACT_STORE_ENV, SharedStore
from hpsearch.storage.attrs import CHECKPOINT_ATTR, HOST_ATTR
from hpsearch.train.checkpoints import checkpoint_path
from hpsearch.worker.provenance import folder_name

# Optuna names an artifact with a UUID; anything else in the study's records (`../../x`) would
# make a file-system store read outside itself.
_ARTIFACT_ID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def download_checkpoint(
    view: StudyView, trial: FrozenTrial, directory: Path, shared: SharedStore | None
) -> Path:
    """Copy `trial`'s checkpoint to `directory/trial-NNNNN.pt`; returns that path.

    Only the study's own checkpoint is copied: an artifact of the trial with a UUID for its id,
    or a regular file (not a link) `<artifacts>/<study>/checkpoints/trial-NNNNN.pt`.
    """
    name = checkpoint_path(Path(), trial.number).name
    target = directory / name
    if os.path.lexists(target):
        raise HpsearchError(f"{target} exists already; remove it or pick another --download DIR")
    metas = [m for m in _artifact_metas(view, trial) if m.filename == name]
    if metas:
        return _from_store(trial, metas[-1].artifact_id, target, shared)
    source = _local_checkpoint(view, trial, name)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target, follow_symlinks=False)
    return target


def _artifact_metas(view: StudyView, trial: FrozenTrial) -> list[ArtifactMeta]:
    try:
        return get_all_artifact_meta(trial, storage=view.storage)
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # a hand-edited record
        raise HpsearchError(
            f"trial {trial.number} has an unreadable artifact record ({type(e).__name__}: "
            f"{str(e)[:80]}); fix or remove its `artifacts:` system attribute"
        ) from None


def _from_store(
    trial: FrozenTrial, artifact_id: object, target: Path, shared: SharedStore | None
) -> Path:
    if not isinstance(artifact_id, str) or not _ARTIFACT_ID.fullmatch(artifact_id):
        raise HpsearchError(
            f"trial {trial.number}'s checkpoint record names artifact {str(artifact_id)[:60]!r}, "
            "which is not an artifact id Optuna made; it is not downloaded"
        )
    if shared is None:
        raise HpsearchError(
            f"trial {trial.number}'s checkpoint is in an artifact store, but none is "
            f"configured here; set {ARTIFACT_STORE_ENV} or `artifact_store:` as the workers "
            "had it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_artifact(
            artifact_store=shared.store, file_path=str(target), artifact_id=artifact_id
        )
    except ArtifactNotFound:
        target.unlink(missing_ok=True)
        raise HpsearchError(
            f"trial {trial.number}'s checkpoint {artifact_id} is not in the store "
            f"{shared.label}: it was removed (not among the best `keep_checkpoints`) or the "
            "store is not the one the workers used"
        ) from None
    return target


def _local_checkpoint(view: StudyView, trial: FrozenTrial, name: str) -> Path:
    """The checkpoint a worker on this machine recorded, if it is one (see download_checkpoint)."""
    recorded = trial.user_attrs.get(CHECKPOINT_ATTR)
    if not isinstance(recorded, str):
        raise HpsearchError(
            f"trial {trial.number} kept no checkpoint (only the trainer's best "
            "`keep_checkpoints` completed trials do)"
        )
    source = Path(recorded)
    own = Path(folder_name(view.name), "checkpoints", name)  # see objective.trainer
    if not source.is_absolute() or Path(*source.parts[-3:]) != own:
        raise HpsearchError(
            f"trial {trial.number}'s `checkpoint` attribute names {recorded[:80]!r}, which is not "
            f"this study's checkpoint (.../{own.as_posix()}); it is not copied"
        )
    if source.is_symlink() or not source.is_file():
        host = trial.user_attrs.get(HOST_ATTR, "another machine")
        raise HpsearchError(
            f"trial {trial.number}'s checkpoint is {source} on {host}, not on this machine (or "
            "removed since); copy it from there, or give the study an `artifact_store:` that "
            "every machine shares (docs/deployment.md)"
        )
    return source
