"""`hpsearch best --download DIR`: a trial's checkpoint, fetched from wherever it is kept.

From the shared artifact store when the trial uploaded it there (any machine that reaches the
store can fetch it), else from this machine's artifacts folder when it was trained here. Every
way it can be out of reach is one line that says where it is and what to do.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from optuna.artifacts import download_artifact, get_all_artifact_meta
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from hpsearch.errors import HpsearchError
from hpsearch.inspect.source import StudyView
from hpsearch.storage.artifacts import ARTIFACT_STORE_ENV, SharedStore
from hpsearch.storage.attrs import CHECKPOINT_ATTR, HOST_ATTR
from hpsearch.train.checkpoints import checkpoint_path


def download_checkpoint(
    view: StudyView, trial: FrozenTrial, directory: Path, shared: SharedStore | None
) -> Path:
    """Copy `trial`'s checkpoint to `directory/trial-NNNNN.pt`; returns that path."""
    name = checkpoint_path(Path(), trial.number).name
    target = directory / name
    if target.exists():
        raise HpsearchError(f"{target} exists already; remove it or pick another --download DIR")
    metas = [m for m in get_all_artifact_meta(trial, storage=view.storage) if m.filename == name]
    if metas:
        if shared is None:
            raise HpsearchError(
                f"trial {trial.number}'s checkpoint is in an artifact store, but none is "
                f"configured here; set {ARTIFACT_STORE_ENV} or `artifact_store:` as the workers "
                "had it"
            )
        directory.mkdir(parents=True, exist_ok=True)
        artifact_id = metas[-1].artifact_id
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
    recorded = trial.user_attrs.get(CHECKPOINT_ATTR)
    if not isinstance(recorded, str):
        raise HpsearchError(
            f"trial {trial.number} kept no checkpoint (only the trainer's best "
            "`keep_checkpoints` completed trials do)"
        )
    source = Path(recorded)
    if not source.is_file():
        host = trial.user_attrs.get(HOST_ATTR, "another machine")
        raise HpsearchError(
            f"trial {trial.number}'s checkpoint is {source} on {host}, not on this machine (or "
            "removed since); copy it from there, or give the study an `artifact_store:` that "
            "every machine shares (docs/deployment.md)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
