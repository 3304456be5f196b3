"""Which trials keep a checkpoint: the study's best N completed trials, wherever they ran.

The decision is made from the study, not from the files a machine happens to hold: a trial
keeps its checkpoint only while it is among the best `keep_checkpoints` COMPLETE trials by the
study's metric and direction (with several objectives, the first N of the Pareto front ordered by
the first objective, as `hpsearch best` shows them). A pruned, failed or stopped trial never
keeps one. Ties go to the earlier trial, so every worker reaches the same answer.

Where a kept checkpoint lives: with a shared artifact store (`artifact_store:`), it is uploaded
through `optuna.artifacts` while its trial still runs and the local file is deleted; without
one, it stays in this machine's artifacts folder. After every trial each worker removes what
fell out of the best N: its machine's files, and the store's artifacts (a removed artifact's
entry stays on its finished trial, which Optuna keeps read-only).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.storage.artifacts import SharedStore
from hpsearch.storage.attrs import CHECKPOINT_ATTR
from hpsearch.storage.optuna_compat import study_storage
from hpsearch.train.checkpoints import checkpoint_path, remove_checkpoint, trial_checkpoints

_log = logging.getLogger(__name__)


def best_numbers(
    trials: Iterable[tuple[int, Sequence[float]]], directions: Sequence[StudyDirection], keep: int
) -> list[int]:
    """The numbers of the `keep` best (number, values), best first; see the module docstring."""
    if keep <= 0:
        return []
    signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in directions]
    scored = [
        (number, [s * v for s, v in zip(signs, values, strict=True)])
        for number, values in trials
        if all(math.isfinite(v) for v in values)
    ]
    if len(signs) > 1:
        scored = [(n, v) for n, v in scored if not any(_dominates(w, v) for _, w in scored)]
    scored.sort(key=lambda item: (item[1][0], item[0]))
    return [number for number, _ in scored[:keep]]


def _dominates(a: list[float], b: list[float]) -> bool:
    """Whether `a` is at least as good as `b` everywhere and better somewhere (both minimised)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


class Checkpoints:
    """One worker's view of its study's checkpoints (see the module docstring)."""

    def __init__(self, directory: Path, keep: int, shared: SharedStore | None) -> None:
        self.directory = directory
        self.keep = keep
        self.shared = shared
        self._handled: set[int] = set()  # trials whose artifacts this worker removed

    def path(self, number: int) -> Path:
        """Where trial `number` writes its checkpoint while it trains, on this machine."""
        return checkpoint_path(self.directory, number)

    def discard(self, number: int) -> None:
        """The trial will not complete (pruned, failed, stopped): its checkpoint goes."""
        remove_checkpoint(self.path(number))

    def finish(self, trial: optuna.Trial, values: Sequence[float]) -> str | None:
        """Keep the checkpoint of a trial about to complete with `values`, if it ranks.

        Called while the trial is still RUNNING (a finished trial's attributes are read-only):
        ranked with the study's completed trials, it is uploaded to the shared store or left
        in the local folder. Returns where it now is, for the trial's `checkpoint` attribute,
        or None when it is not among the best.
        """
        path = self.path(trial.number)
        complete = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ranked = [(t.number, t.values) for t in complete if t.values is not None]
        kept = best_numbers([*ranked, (trial.number, values)], trial.study.directions, self.keep)
        if trial.number not in kept or not path.is_file():
            self.discard(trial.number)
            return None
        if self.shared is None:
            return str(path.resolve())
        # Imported here: `optuna.artifacts` imports boto3 when it is installed (0.4 s at every
        # worker's start), and only a study with a shared store needs it.
        from optuna.artifacts import upload_artifact

        artifact_id = upload_artifact(
            artifact_store=self.shared.store, file_path=str(path), study_or_trial=trial
        )
        self.discard(trial.number)  # the shared copy is the one that counts now
        return self.shared.location(artifact_id)

    def prune(
        self, study: optuna.Study, finishing: tuple[int, Sequence[float]] | None = None
    ) -> None:
        """Remove the checkpoints of finished trials that are not among the best N.

        This machine's files (a running trial's is never touched) and, for trials that recorded
        one, the shared store's artifacts. Run by every worker after each of its trials, so a
        crashed trial's leftovers go too; removing what another worker removed is no error.
        `finishing`: the (number, values) of this worker's trial about to complete, which the
        study still shows running, ranked as if complete (it may push another out).
        """
        trials = study.get_trials(deepcopy=False)
        ranked = [(t.number, t.values) for t in trials if _complete(t)]
        if finishing is not None:
            ranked.append(finishing)
        kept = set(best_numbers(ranked, study.directions, self.keep))
        finished = {t.number for t in trials if t.state.is_finished()}
        for number, path in trial_checkpoints(self.directory).items():
            if number in finished and number not in kept:
                remove_checkpoint(path)
        if self.shared is None:
            return
        from optuna.artifacts import get_all_artifact_meta  # boto3's import cost: see `finish`

        storage = study_storage(study)
        for trial in trials:
            if trial.number in kept or trial.number in self._handled:
                continue
            # Only trials that recorded a checkpoint were uploaded: the others need no look-up.
            if trial.state.is_finished() and CHECKPOINT_ATTR in trial.user_attrs:
                for meta in get_all_artifact_meta(trial, storage=storage):
                    if meta.filename == self.path(trial.number).name:
                        self._remove(meta.artifact_id, trial)
                # Once out of the best N, a trial stays out: it is not looked at again.
                self._handled.add(trial.number)

    def _remove(self, artifact_id: str, trial: FrozenTrial) -> None:
        from optuna.artifacts.exceptions import ArtifactNotFound

        assert self.shared is not None
        try:
            self.shared.store.remove(artifact_id)
            _log.info("trial %d's checkpoint left the best %d: removed", trial.number, self.keep)
        except ArtifactNotFound:
            pass  # another worker removed it first


def _complete(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and trial.values is not None
