"""hpsearch from Python: the study file's study as an `optuna.Study`, run in this process.

The same rules as the command line, through the same code: `load` validates the file as
`hpsearch validate` does; `create_study` creates or joins the Optuna study with hpsearch's
sampler, pruner, study-wide budget and storage precedence; `run` is `hpsearch run` in this
process, with the file's objective or a Python function `objective(params, report)`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna

from hpsearch.budget import BudgetSpent, for_run
from hpsearch.errors import StorageError
from hpsearch.objective import UserFunction
from hpsearch.spec import Budget, LoadedSpec, load_spec
from hpsearch.storage import StorageURL, resolve
from hpsearch.storage.optuna_compat import study_storage
from hpsearch.study.arguments import check_arguments
from hpsearch.worker import RunOptions, StudySession, run_worker, worker_name

__all__ = ["create_study", "load", "run", "storage_url"]

StudyFile = str | os.PathLike[str] | LoadedSpec


def load(path: str | os.PathLike[str]) -> LoadedSpec:
    """Read and validate a study file (`LoadedSpec.spec` is the frozen, typed study).

    Raises:
        hpsearch.SpecError: one line naming the file, the line, the key and the fix.
    """
    check_arguments("load", locals())
    return load_spec(Path(path))


def _loaded(study_file: StudyFile) -> LoadedSpec:
    return study_file if isinstance(study_file, LoadedSpec) else load(study_file)


def storage_url(study_file: StudyFile, storage: str | None = None) -> StorageURL:
    """Where the study lives, by the command line's precedence (`storage` as `--storage`)."""
    check_arguments("storage_url", locals())
    return resolve(_loaded(study_file), flag=storage)


def _budget(
    loaded: LoadedSpec, n_trials: int | None, timeout: float | None, change: bool
) -> tuple[Budget, bool]:
    return for_run(loaded.spec.budget, n_trials=n_trials, timeout=timeout, change=change)


class BudgetedStudy(optuna.Study):
    """A plain `optuna.Study` whose `optimize` ends when the study-wide budget is spent, as it
    ends under Optuna's `MaxTrialsCallback`, instead of raising `BudgetSpent` out of the loop.

    `ask()` still raises `BudgetSpent` (a hand-written ask/tell loop needs to know).
    """

    def optimize(self, func: Any, *args: Any, **kwargs: Any) -> None:
        try:
            super().optimize(func, *args, **kwargs)
        except BudgetSpent:
            return


def create_study(
    study_file: StudyFile,
    *,
    storage: str | None = None,
    name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    change_budget: bool = False,
) -> optuna.Study:
    """Create the file's study, or join it, and return it as a plain `optuna.Study`.

    The study-wide budget is attached to the storage: `study.optimize` run by hand claims a
    slot for each trial and returns once the budget is spent (as under Optuna's
    `MaxTrialsCallback`), however many processes share the study; `ask()` raises
    `hpsearch.BudgetSpent` then. `n_trials` / `timeout` (seconds) are the
    `--n-trials` / `--timeout` of `hpsearch run`.

    Raises:
        hpsearch.SpecError: the file is invalid, or differs from the study it joins.
        hpsearch.StorageError: the storage cannot be reached.
    """
    check_arguments("create_study", locals())
    loaded = _loaded(study_file)
    budget, change = _budget(loaded, n_trials, timeout, change_budget)
    session = StudySession.open(
        loaded, resolve(loaded, flag=storage), worker=worker_name("api"), name=name,
        budget=budget, change_budget=change,
    )  # fmt: skip
    study = session.study
    return BudgetedStudy(
        study_name=study.study_name, storage=study_storage(study),
        sampler=study.sampler, pruner=study.pruner,
    )  # fmt: skip


def run(
    study_file: StudyFile,
    objective: UserFunction | None = None,
    *,
    storage: str | None = None,
    name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    change_budget: bool = False,
    artifacts: str | None = None,
) -> optuna.Study:
    """Run the study in this process until its budget is spent; returns the `optuna.Study`.

    `objective(params, report)` replaces the file's objective: `params` maps each parameter to
    its value (a power of two as the value, not its exponent) plus the file's fixed options,
    and `report(metrics, step)` records an intermediate value and raises when the pruner stops
    the trial. Without it the file's own objective runs (function, command or trainer). The
    rest is `hpsearch run`'s: the exact budget, retries, Ctrl-C handing the trial back.

    Raises:
        hpsearch.HpsearchError: as the command line would report it.
    """
    check_arguments("run", locals())
    loaded = _loaded(study_file)
    url = resolve(loaded, flag=storage)
    budget, change = _budget(loaded, n_trials, timeout, change_budget)
    run_options = RunOptions(
        budget=budget,
        change_budget=change,
        study_name=name,
        worker_id="api",
        artifacts=artifacts,
        function=objective,
    )
    report = run_worker(loaded, url, run_options)
    if report.study is None:  # stopped before it joined the study
        raise StorageError(f"study {name or loaded.spec.name!r} was not joined; see the log")
    return report.study
