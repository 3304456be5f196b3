"""A trial's fate when its worker cannot decide it: a live trial judged stale is revived.

Under load a worker's heartbeat thread can be starved of CPU (or the worker cut from its
database) for longer than the grace period; another worker then fails its trial as stale and
queues a retry. The live worker's result used to be lost ("Cannot tell a FAIL trial"). Now the
live worker revives its trial at its next write, heartbeat or tell, and the retry that has not
started is failed instead: the result is recorded once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.spec import load_spec
from hpsearch.storage import StorageURL, open_storage
from hpsearch.storage.optuna_compat import trial_id
from hpsearch.worker import RetryPolicy, StudySession


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")


def _judged_stale_by_another_worker(url: str, name: str, trial: optuna.Trial) -> None:
    other = open_storage(StorageURL(url, "test"), heartbeat_interval=60)
    assert other.fail_trial(trial_id(trial), "stopped sending heartbeats", cause="crash")  # type: ignore[attr-defined]
    assert RetryPolicy(2).requeue_missing(optuna.load_study(study_name=name, storage=other))


@pytest.mark.parametrize("write", ["report", "tell"])
def test_a_live_trial_failed_as_stale_keeps_its_result(
    storage_url: str, quadratic_study: Callable[..., Path], unique_name: str, write: str
) -> None:
    path = quadratic_study(extra="workers: {heartbeat_interval: 60}")
    session = StudySession.open(load_spec(path), StorageURL(storage_url, "test"), worker="w#0")
    study = session.study
    trial = study.ask()
    _judged_stale_by_another_worker(storage_url, unique_name, trial)
    assert study.get_trials()[0].state == TrialState.FAIL  # this worker's cache holds it so
    # Fake: the CPU starvation that kept this worker from beating for longer than the grace
    # period (it cannot be produced on demand): its last beat is long past.
    session.database._beat_ok = -float("inf")  # type: ignore[union-attr]  # noqa: SLF001
    if write == "report":
        trial.report(1.0, 1)  # the first write after it revives the trial
    session.before_tell(trial)  # what the worker does before Optuna tells the result
    study.tell(trial, 2.0)
    first, retry = study.get_trials()
    assert first.state == TrialState.COMPLETE
    assert first.value == 2.0
    assert "fail_reason" not in first.user_attrs
    assert first.intermediate_values == ({1: 1.0} if write == "report" else {})
    assert retry.state == TrialState.FAIL  # queued, never started: the result is not run twice
    assert retry.user_attrs["fail_reason"].startswith("trial 0 was alive after all")


def test_a_beating_trial_costs_no_look(
    storage_url: str, quadratic_study: Callable[..., Path]
) -> None:
    """A trial that beats in time is never read back by `keep_alive` (no query per trial)."""
    path = quadratic_study(extra="workers: {heartbeat_interval: 60}")
    session = StudySession.open(load_spec(path), StorageURL(storage_url, "test"), worker="w#0")
    trial = session.study.ask()
    assert session.database is not None
    assert not session.database.keep_alive(trial_id(trial))


def test_the_revival_is_logged_with_the_trials_number_not_its_database_id(
    storage_url: str, quadratic_study: Callable[..., Path], unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    other = optuna.create_study(storage=storage_url)
    for _ in range(3):  # the database's trial ids run ahead of this study's numbers
        other.ask()
    path = quadratic_study(extra="workers: {heartbeat_interval: 60}")
    session = StudySession.open(load_spec(path), StorageURL(storage_url, "test"), worker="w#0")
    study = session.study
    trial = study.ask()
    assert trial_id(trial) != trial.number
    _judged_stale_by_another_worker(storage_url, unique_name, trial)
    session.database._beat_ok = -float("inf")  # type: ignore[union-attr]  # noqa: SLF001
    with caplog.at_level("WARNING"):
        trial.report(1.0, 1)  # revives it
    revived = [r.getMessage() for r in caplog.records if "failed as stale" in r.getMessage()]
    assert revived == [
        f"trial {trial.number} was failed as stale but its worker is alive: it goes on"
    ]
