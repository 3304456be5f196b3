"""hpsearch from Python: the study file's study as an `optuna.Study`, run in this process.

The same rules as the command line, through the same code: `load` validates the file as
`hpsearch validate` does; `create_study` creates or joins the Optuna study with hpsearch's
sampler, pruner, study-wide budget and storage precedence; `run` is `hpsearch run` in this
process, with the file's objective or a Python function `objective(params, report)`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import optuna

from hpsearch.api_args import check_arguments
from hpsearch.errors import StorageError
from hpsearch.objective import UserFunction
from hpsearch.spec import Budget, LoadedSpec, load_spec
from hpsearch.storage import ResilientRDBStorage, StorageURL, open_storage, resolve
from hpsearch.storage.optuna_compat import study_id
from hpsearch.study import check_requirements, create_or_load
from hpsearch.worker import Ledger, Limits, RunOptions, run_worker

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


def _budget(loaded: LoadedSpec, n_trials: int | None, timeout: float | None) -> Budget:
    update: dict[str, object] = {}
    if n_trials is not None:
        update["n_trials"] = n_trials
    if timeout is not None:
        update["timeout"] = float(timeout)
    return loaded.spec.budget.model_copy(update=update)


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
    slot for each trial, and `ask()` raises `hpsearch.BudgetSpent` once the budget is spent,
    however many processes share the study. `n_trials` / `timeout` (seconds) are the
    `--n-trials` / `--timeout` of `hpsearch run`.

    Raises:
        hpsearch.SpecError: the file is invalid, or differs from the study it joins.
        hpsearch.StorageError: the storage cannot be reached.
    """
    check_arguments("create_study", locals())
    loaded = _loaded(study_file)
    check_requirements(loaded)
    url = resolve(loaded, flag=storage)
    spec = loaded.spec
    rdb = open_storage(url, heartbeat_interval=spec.workers.heartbeat_interval,
                       grace_period=spec.workers.grace_seconds)  # fmt: skip
    budget = _budget(loaded, n_trials, timeout)
    explicit = change_budget or n_trials is not None or timeout is not None
    worker = f"{socket.gethostname()}:{os.getpid()}#api"
    joined = create_or_load(
        loaded, rdb, name=name, worker=worker, budget=budget, change_budget=explicit
    )
    if isinstance(rdb, ResilientRDBStorage):
        sid = study_id(joined.study)
        ledger = Ledger(rdb.engine, sid, uid=joined.uid, max_wait=rdb.max_wait)
        limits = Limits.of(joined.budget)
        if joined.created or joined.budget_changed:
            ledger.set_limits(limits)
        else:
            ledger.ensure(limits)
        rdb.use_budget(sid, ledger)
    return joined.study


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
    run_options = RunOptions(
        budget=_budget(loaded, n_trials, timeout),
        change_budget=change_budget or n_trials is not None or timeout is not None,
        study_name=name,
        worker_id="api",
        artifacts=artifacts,
        function=objective,
    )
    report = run_worker(loaded, url, run_options)
    if report.study is None:  # stopped before it joined the study
        raise StorageError(f"study {name or loaded.spec.name!r} was not joined; see the log")
    return report.study
