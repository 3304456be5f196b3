"""Where a trial's resume checkpoints live across the fleet, and what a retry continues from.

One folder per trial, shared by its retries: `<artifacts>/resume/trial-00012/`, where 12 is the
trial first run (a retry's `failed_trial`, also for a retry of a retry). So a retry on the same
machine finds the folder as its predecessor left it. With a shared artifact store
(`artifact_store:`), each file written there is also uploaded as an artifact of the trial that
wrote it (Optuna's artifact API), and a retry on any machine downloads what the trials it
retries (`retry_history`) uploaded last. Retention (docs/trainer.md): only the latest two resume
checkpoints of a trial exist; a retry removes its predecessors' uploads once it has saved its
own; a trial that completes, is pruned or fails by itself loses them all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.budget import RETRY_HISTORY
from hpsearch.objective.types import Metrics, Report, ResumeInfo
from hpsearch.storage import RETRY_ATTR
from hpsearch.storage.artifacts import SharedStore
from hpsearch.storage.attrs import FAILED_TRIAL_ATTR
from hpsearch.storage.optuna_compat import study_id, trial_intermediate_values, trial_system_attrs
from hpsearch.train import resume_files

_log = logging.getLogger(__name__)
RESUME_DIR = "resume"


class TrialFiles:
    """One trial's resume folder on this machine, mirrored to the shared store when there is one.

    Used by the built-in trainer (through `TrainerResume`) and by user code (the folder it is
    given, synced after each reported step).
    """

    def __init__(self, trial: optuna.Trial, base: Path, shared: SharedStore | None) -> None:
        self.trial = trial
        system = trial_system_attrs(trial)  # as the trial started: no storage read
        self.root = int(system.get(FAILED_TRIAL_ATTR, trial.number))
        self.folder = base / f"trial-{self.root:05d}"
        self.shared = shared
        self._history = [int(n) for n in system.get(RETRY_HISTORY, [])]  # the trials it retries
        self._earlier: list[FrozenTrial] | None = None
        self._uploaded: dict[str, tuple[str, int, int]] = {}  # name: (artifact id, size, mtime)

    @property
    def earlier(self) -> list[FrozenTrial]:
        """The trials this one retries, oldest first (read once, when first needed)."""
        if self._earlier is None:
            storage, sid = self.trial.storage, study_id(self.trial.study)
            self._earlier = [
                storage.get_trial(storage.get_trial_id_from_study_id_trial_number(sid, n))
                for n in self._history
            ]
        return self._earlier

    @property
    def resumed_step(self) -> int:
        """The last step the study holds for this trial (copied from the trials it retries)."""
        return max(trial_intermediate_values(self.trial), default=0)

    # --- the shared store -------------------------------------------------------------------

    def download(self, wanted: Callable[[str], bool] = lambda name: True) -> None:
        """Fetch what the earlier trials uploaded last, for the names `wanted` says.

        A file uploaded again replaced its earlier upload, which was removed from the store
        (Optuna keeps its entry, in no particular order): the one copy still there is fetched.
        """
        if self.shared is None or not self._history:
            return
        from optuna.artifacts import get_all_artifact_meta

        candidates: dict[str, list[str]] = {}
        for earlier in reversed(self.earlier):  # the latest trial's uploads first
            for meta in get_all_artifact_meta(earlier, storage=self.trial.storage):
                if wanted(meta.filename):
                    candidates.setdefault(meta.filename, []).append(meta.artifact_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, ids in candidates.items():
            any(self._fetch(name, artifact_id) for artifact_id in ids)

    def _fetch(self, name: str, artifact_id: str) -> bool:
        from optuna.artifacts.exceptions import ArtifactNotFound

        assert self.shared is not None
        tmp = self.folder / f".{name}.{os.getpid()}.download"
        try:
            with self.shared.store.open_reader(artifact_id) as reader, tmp.open("wb") as f:
                shutil.copyfileobj(reader, f)
            os.replace(tmp, self.folder / name)
            return True
        except ArtifactNotFound:
            return False  # removed since (replaced, or an old checkpoint): another copy will do
        finally:
            tmp.unlink(missing_ok=True)

    def upload(self, names: Iterable[str] | None = None) -> None:
        """Upload the folder's files that changed since their last upload (`names`: only
        those, in that order); remove the uploads of files that are gone."""
        if self.shared is None:
            return
        from optuna.artifacts import upload_artifact

        present = sorted(p.name for p in self._files())
        for name in names if names is not None else present:
            path = self.folder / name
            if not path.is_file():
                continue
            stat = path.stat()
            before = self._uploaded.get(name)
            if before is not None and before[1:] == (stat.st_size, stat.st_mtime_ns):
                continue
            artifact_id = upload_artifact(
                artifact_store=self.shared.store, file_path=str(path), study_or_trial=self.trial
            )
            self._uploaded[name] = (artifact_id, stat.st_size, stat.st_mtime_ns)
            if before is not None:
                self._remove(before[0])
        for name in [n for n in self._uploaded if n not in present]:
            self._remove(self._uploaded.pop(name)[0])

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith(".")]

    def release_earlier(self) -> None:
        """This trial saved its own state: the trials it retries need theirs no more."""
        if self.shared is None or not self._history:
            return
        from optuna.artifacts import get_all_artifact_meta

        for earlier in self.earlier:
            for meta in get_all_artifact_meta(earlier, storage=self.trial.storage):
                self._remove(meta.artifact_id)
        self._history, self._earlier = [], []

    def _remove(self, artifact_id: str) -> None:
        from optuna.artifacts.exceptions import ArtifactNotFound

        assert self.shared is not None
        with contextlib.suppress(ArtifactNotFound):
            self.shared.store.remove(artifact_id)

    def discard(self) -> None:
        """The trial ended for good (complete, pruned, failed by itself): remove everything."""
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.shared is None:
            return
        try:
            for artifact_id, _, _ in self._uploaded.values():
                self._remove(artifact_id)
            self._uploaded.clear()
            self.release_earlier()
        except Exception as e:  # a storage hiccup must not fail a finished trial
            _log.warning("resume checkpoints not removed from the store: %s", e)


class TrainerResume:
    """The built-in trainer's `ResumeStore`: verified checkpoints in the trial's `TrialFiles`."""

    def __init__(self, files: TrialFiles) -> None:
        self.files = files
        self.local = resume_files.ResumeFolder(files.folder)

    def latest(self) -> Path | None:
        def wanted(name: str) -> bool:
            return resume_files.epoch_of(name.removesuffix(resume_files.DIGEST_SUFFIX)) is not None

        self.files.download(wanted)
        return self.local.latest()

    def save(self, epoch: int, write: Callable[[Path], None]) -> None:
        self.local.save(epoch, write)
        name = resume_files.file_name(epoch)
        # The checkpoint, then its checksum: a reader trusts no checkpoint before its sidecar.
        self.files.upload([name, name + resume_files.DIGEST_SUFFIX])
        self.files.upload()  # drops the uploads of the epochs the folder no longer keeps
        self.files.release_earlier()


def sweep(base: Path, study: optuna.Study) -> None:
    """Remove this machine's resume folders of trials that ended for good.

    A trial removes its own folder when it ends; this catches what a killed worker left on its
    machine once the retry, wherever it ran, has finished. A folder stays while its trial runs,
    waits, or failed for a retry not yet queued (or refused: `workers.max_retries`).
    """
    folders = list(base.glob("trial-*")) if base.is_dir() else []
    if not folders:  # the usual case: each trial removed its own
        return
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get(RETRY_HISTORY, [])}
    roots, open_roots = set(), set()
    for t in trials:
        root = int(t.system_attrs.get(FAILED_TRIAL_ATTR, t.number))
        roots.add(root)
        waits = t.state == TrialState.FAIL and RETRY_ATTR in t.system_attrs
        if not t.state.is_finished() or (waits and t.number not in retried):
            open_roots.add(root)
    for folder in folders:
        number = folder.name.removeprefix("trial-")
        if number.isdigit() and int(number) in roots - open_roots:
            shutil.rmtree(folder, ignore_errors=True)


UserRun = Callable[[optuna.Trial, dict[str, Any], Report, ResumeInfo], Any]


class _Synced:
    """The trial's `report`, uploading what the code saved before each step is recorded; its
    other attributes (`directory`, `keep_checkpoint`, ...) are the report's own."""

    def __init__(self, report: Report, files: TrialFiles) -> None:
        self._report = report
        self._files = files

    def __call__(self, value: Metrics | float, step: int) -> None:
        self._files.upload()
        self._report(value, step)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._report, name)


def with_checkpoints(
    run: UserRun, base: Path, shared: SharedStore | None, *, enabled: bool = True
) -> Callable[[optuna.Trial, dict[str, Any], Report], Any]:
    """A user objective's run with a per-trial checkpoint folder (`ResumeInfo`): filled from the
    shared store before the trial, each file uploaded when it changed before each reported
    step, and emptied when the trial ends for good (see the module docstring).

    `enabled=False` (a function that takes no `trial`): no folder, nothing to sync.
    """

    def plain(trial: optuna.Trial, values: dict[str, Any], report: Report) -> Any:
        folder = base / f"trial-{trial.number:05d}"
        return run(trial, values, report, ResumeInfo(trial.number, folder, 0))

    def wrapped(trial: optuna.Trial, values: dict[str, Any], report: Report) -> Any:
        files = TrialFiles(trial, base, shared)
        files.download()
        files.folder.mkdir(parents=True, exist_ok=True)
        info = ResumeInfo(trial.number, files.folder, files.resumed_step)

        try:
            result = run(trial, values, _Synced(report, files), info)
        except Exception:
            files.discard()  # pruned or failed by itself: it is not retried
            raise
        files.discard()
        sweep(base, trial.study)
        return result

    return wrapped if enabled else plain
