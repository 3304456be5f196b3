"""The study-wide ledger on every real storage: each limit, raising the budget, a study's own."""

from __future__ import annotations

import pickle
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import hpsearch
from hpsearch.budget import BudgetSpent, Ledger, Limits
from hpsearch.storage import ResilientRDBStorage, StorageURL, open_storage
from hpsearch.storage.optuna_compat import study_id


@pytest.fixture
def ledger(storage_url: str) -> Ledger:
    storage = open_storage(StorageURL(storage_url, "test"))
    study = optuna.create_study(study_name=f"b-{uuid.uuid4().hex[:8]}", storage=storage)
    assert isinstance(storage, ResilientRDBStorage)
    return Ledger(storage.engine, study_id(study))


def test_trial_limit_and_a_raised_budget(ledger: Ledger) -> None:
    ledger.set_limits(Limits(n_trials=3))
    assert [ledger.claim() for _ in range(4)] == [True, True, True, False]
    state = ledger.state()
    assert state is not None
    assert state.spent_reason(0) == "n_trials reached (3/3)"
    ledger.ensure(Limits(n_trials=9))  # a joiner: the study's budget stays
    assert not ledger.claim()
    ledger.set_limits(Limits(n_trials=5))  # a later `hpsearch run --n-trials 5`
    assert [ledger.claim(), ledger.claim(), ledger.claim()] == [True, True, False]


def test_timeout_counts_from_the_first_claim(ledger: Ledger) -> None:
    ledger.set_limits(Limits(timeout_s=60))
    assert ledger.claim(now=1000.0)
    assert ledger.claim(now=1059.0)
    assert not ledger.claim(now=1060.5)
    state = ledger.state()
    assert state is not None
    assert state.spent_reason(1061) == "timeout reached (60s since the first trial)"


def test_gpu_hours_stop_new_trials(ledger: Ledger) -> None:
    ledger.set_limits(Limits(gpu_hours=1.0))
    assert ledger.claim()
    ledger.spend_gpu_seconds(3000)
    assert ledger.claim()
    ledger.spend_gpu_seconds(700)
    assert not ledger.claim()
    state = ledger.state()
    assert state is not None
    assert state.spent_reason(0) == "gpu_hours reached (1.03 h)"


def test_times_keep_full_precision_on_every_backend(ledger: Ledger) -> None:
    """MariaDB's FLOAT is single precision: a Unix time lost minutes (`time 56m` after 15 s)."""
    ledger.set_limits(Limits(timeout_s=1800.5))
    now = time.time()
    assert ledger.claim(now=now)
    state = ledger.state()
    assert state is not None
    assert state.started_at is not None
    assert abs(state.started_at - now) < 1.0
    assert state.timeout_s == 1800.5


def test_a_single_precision_table_of_an_earlier_version_is_widened(mysql_url: str) -> None:
    storage = open_storage(StorageURL(mysql_url, "test"))
    assert isinstance(storage, ResilientRDBStorage)
    with storage.engine.begin() as c:
        c.exec_driver_sql("DROP TABLE IF EXISTS hpsearch_ledger")
        c.exec_driver_sql(
            "CREATE TABLE hpsearch_ledger (study_id INTEGER PRIMARY KEY, trial_limit INTEGER,"
            " claimed INTEGER NOT NULL, retry_slots INTEGER NOT NULL, started_at FLOAT,"
            " timeout_s FLOAT, gpu_seconds FLOAT NOT NULL, gpu_seconds_limit FLOAT)"
        )
    study = optuna.create_study(study_name=f"b-{uuid.uuid4().hex[:8]}", storage=storage)
    ledger = Ledger(storage.engine, study_id(study), uid="u1")
    ledger.set_limits(Limits(n_trials=2))
    now = time.time()
    assert ledger.claim(now=now)
    state = ledger.state()
    assert state is not None
    assert state.started_at is not None
    assert abs(state.started_at - now) < 1.0


def test_a_deleted_studys_ledger_is_not_inherited(storage_url: str) -> None:
    """SQLite hands a deleted study's id to the next study: its spent ledger must not follow."""
    storage = open_storage(StorageURL(storage_url, "test"))
    assert isinstance(storage, ResilientRDBStorage)
    old = optuna.create_study(study_name=f"b-{uuid.uuid4().hex[:8]}", storage=storage)
    first = Ledger(storage.engine, study_id(old), uid="first")
    first.set_limits(Limits(n_trials=1))
    assert first.claim()
    assert not first.claim()
    # The next study with the same id (as SQLite gives it) has another uid.
    second = Ledger(storage.engine, study_id(old), uid="second")
    assert second.state() is None  # not its ledger
    second.ensure(Limits(n_trials=2))
    assert [second.claim(), second.claim(), second.claim()] == [True, True, False]


def test_epochs_are_claimed_with_each_reported_step(storage_url: str) -> None:
    storage = open_storage(StorageURL(storage_url, "test"))
    assert isinstance(storage, ResilientRDBStorage)
    study = optuna.create_study(study_name=f"b-{uuid.uuid4().hex[:8]}", storage=storage)
    ledger = Ledger(storage.engine, study_id(study), uid="u")
    ledger.set_limits(Limits(epochs=3))
    storage.use_budget(study_id(study), ledger)
    trial = study.ask()
    trial.report(0.1, 1)
    trial.report(0.2, 2)
    with pytest.warns(UserWarning, match="already reported"):
        trial.report(0.25, 2)  # the same step again claims nothing (Optuna ignores it)
    trial.report(0.3, 3)
    with pytest.raises(BudgetSpent):
        trial.report(0.4, 4)
    assert study.trials[0].intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}
    state = ledger.state()
    assert state is not None
    assert state.spent_reason(0) == "epochs reached (3/3)"
    study.tell(trial, 0.3)
    with pytest.raises(BudgetSpent):
        study.ask()  # no epoch left: no new trial either


def test_a_storage_with_a_budget_pickles(storage_url: str) -> None:
    storage = open_storage(StorageURL(storage_url, "test"))
    assert isinstance(storage, ResilientRDBStorage)
    study = optuna.create_study(study_name=f"b-{uuid.uuid4().hex[:8]}", storage=storage)
    ledger = Ledger(storage.engine, study_id(study), uid="u")
    ledger.set_limits(Limits(n_trials=1))
    storage.use_budget(study_id(study), ledger)
    copy = pickle.loads(pickle.dumps(storage))
    again = optuna.load_study(study_name=study.study_name, storage=copy)
    again.ask()  # the copy claims from the same ledger
    with pytest.raises(BudgetSpent):
        study.ask()
    budget = copy._budgets[study_id(study)]  # noqa: SLF001 - what the copy kept
    assert isinstance(budget, Ledger)
    state = budget.state()  # its own engine, not the original's
    assert state is not None
    assert state.claimed == 1


def _study(
    write_study: Callable[..., Path], unique_name: str, budget: str, extra: str = ""
) -> Path:
    return write_study(f"""
        name: {unique_name}
        metric: loss
        direction: minimize
        sampler: {{type: random, seed: 3}}
        pruner: {{type: none}}
        budget: {budget}
        objective: {{function: objective.py:quadratic}}
        search_space:
          x: {{type: float, low: -5, high: 5}}
        {extra}
        """)  # fmt: skip


def test_a_target_as_the_only_budget_ends_and_no_trial_starts_after_it(
    write_study: Callable[..., Path], unique_name: str, storage_url: str
) -> None:
    """A target-only study ran for ever; after the target, other workers went on starting
    trials (each pruned at its first step) because their between-trials look was rate-limited.
    The target now closes the ledger: no worker's claim succeeds after that commit."""
    path = _study(write_study, unique_name, "{target: 4.0}")
    study = hpsearch.run(path, storage=storage_url)  # returns: the target ends it
    reached = [t for t in study.trials if t.value is not None and t.value <= 4.0]
    assert len(reached) == 1
    assert study.trials[-1].number == reached[0].number  # nothing started after it
    other = hpsearch.create_study(path, storage=storage_url)  # another worker, joining
    with pytest.raises(hpsearch.BudgetSpent):
        other.ask()
    assert len(study.trials) == len(other.trials)


def test_queued_trials_that_can_no_longer_start_fail_with_why(
    write_study: Callable[..., Path], unique_name: str, storage_url: str
) -> None:
    """A trial queued after the budget is spent (an enqueued trial, a crashed trial's retry)
    stayed WAITING for ever."""
    enqueue = "enqueue: [{x: 1.0}, {x: 2.0}, {x: 3.0}]"
    path = _study(write_study, unique_name, "{n_trials: 2}", enqueue)
    study = hpsearch.run(path, storage=storage_url)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[2].user_attrs["fail_reason"] == "n_trials reached (2/2)"


def test_joining_a_study_whose_budget_is_spent_says_so(
    write_study: Callable[..., Path], unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A second `run` of a finished study ran 0 trials and exited 0 without a word."""
    path = _study(write_study, unique_name, "{n_trials: 2}")
    url = f"sqlite:///{path.parent / 'spent.db'}"
    hpsearch.run(path, storage=url)
    caplog.clear()
    with caplog.at_level("WARNING", logger="hpsearch"):
        hpsearch.run(path, storage=url)
    lines = [r.getMessage() for r in caplog.records if "already spent" in r.getMessage()]
    assert len(lines) == 1
    assert "n_trials reached (2/2)" in lines[0]
    assert "2 trials, best loss " in lines[0]
    assert "--n-trials N" in lines[0]


def test_a_retry_queued_after_the_budget_is_spent_still_runs(
    write_study: Callable[..., Path], unique_name: str, storage_url: str
) -> None:
    """A worker whose budget was spent found a retry queued a moment later by a stopped worker
    and failed it as "budget spent", though a retry takes no slot of `n_trials`."""
    from hpsearch.spec import load_spec
    from hpsearch.worker import StudySession

    path = _study(write_study, unique_name, "{n_trials: 1}")
    study = hpsearch.run(path, storage=storage_url)
    done = study.trials[0]
    retry = optuna.trial.create_trial(
        state=TrialState.WAITING, params=done.params, distributions=done.distributions,
        system_attrs={"failed_trial": 0, "retry_history": [0]},
    )  # fmt: skip
    study.add_trial(retry)  # what the stopped worker queued
    study.enqueue_trial({"x": 1.0})  # a new trial: no slot left for it
    session = StudySession.open(load_spec(path), StorageURL(storage_url, "test"), worker="w#1")
    assert session.settle_waiting()  # the retry can still start: the worker stays for it
    states = [t.state for t in session.study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.WAITING, TrialState.FAIL]
    assert session.study.trials[2].user_attrs["fail_reason"] == "n_trials reached (1/1)"
    again = hpsearch.run(path, storage=storage_url)  # and a worker runs it
    assert [t.state for t in again.trials][:2] == [TrialState.COMPLETE, TrialState.COMPLETE]
