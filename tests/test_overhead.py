"""What a worker adds to a plain Optuna script, in database statements: the guard on the costs
that `benchmarks/overhead.py` times (a trial, a reported step, the heartbeat, provenance)."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from hpsearch.budget import Ledger, Limits
from hpsearch.spec import load_spec
from hpsearch.storage import ResilientRDBStorage, StorageURL, open_storage
from hpsearch.storage.optuna_compat import study_id, trial_id
from hpsearch.worker import RunOptions, run_worker
from hpsearch.worker.launcher import JOINED_ENV, WAIT_ENV, joined, wait_for_first


@contextmanager
def counting(engine: sa.Engine | None = None) -> Iterator[list[str]]:
    """The SQL statements run meanwhile (on `engine`, or any), less SQLite's `BEGIN IMMEDIATE`:
    hpsearch's serialisation of SQLite writers, which a plain script does not do."""
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if not statement.startswith("BEGIN"):
            statements.append(re.sub(r"\s+", " ", statement))

    target: object = engine if engine is not None else sa.engine.Engine
    sa.event.listen(target, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(target, "before_cursor_execute", count)


def _plain_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    for step in range(1, 4):  # as the study file's `quadratic` does
        trial.report((x - 2) ** 2 + 1 / step, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return (x - 2) ** 2


def test_a_trial_costs_few_statements_more_than_in_plain_optuna(
    storage_url: str, quadratic_study: Callable[..., Path]
) -> None:
    """Beside Optuna's own statements a worker's trial claims its budget slot and writes its
    first heartbeat and its provenance, all in the transaction that creates it. It used to
    cost 24 statements more on PostgreSQL (a heartbeat and the attributes in transactions of
    their own, the finished trial read twice), and 2 more per reported step."""
    n = 12
    loaded = load_spec(quadratic_study(n_trials=n))
    statements: list[str] = []
    active = [False]

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if active[0] and not statement.startswith("BEGIN"):
            statements.append(statement)

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, ledger: object) -> None:
        active[0] = 1 <= trial.number < n - 1  # from the end of the second trial to the last's

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        run_worker(loaded, StorageURL(storage_url, "test"), RunOptions(), on_trial=on_trial)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    worker = len(statements) / (n - 2)

    study = optuna.create_study(
        storage=storage_url, sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.NopPruner(),
    )  # fmt: skip
    study.optimize(_plain_objective, n_trials=2)
    with counting() as statements:
        study.optimize(_plain_objective, n_trials=n - 2)
    plain = len(statements) / (n - 2)
    # The budget slot, the heartbeat and the attributes (3), the told trial read ahead of the
    # next ask() (2); the worker's checks between trials, a query every few seconds at most.
    assert worker <= plain + 7, (worker, plain)


@pytest.mark.parametrize("epochs", [None, 100])
def test_a_reported_step_costs_optunas_statements_and_its_epoch_claim(
    storage_url: str, epochs: int | None
) -> None:
    storage = open_storage(StorageURL(storage_url, "test"))
    assert isinstance(storage, ResilientRDBStorage)
    study = optuna.create_study(storage=storage)
    ledger = Ledger(storage.engine, study_id(study))
    ledger.set_limits(Limits(epochs=epochs))
    storage.use_budget(study_id(study), ledger)
    plain_storage = optuna.storages.RDBStorage(storage_url)
    plain_trial = optuna.create_study(storage=plain_storage).ask()
    trial = study.ask()
    trial.report(0.5, 0)  # the ledger's epoch limit is read once
    plain_trial.report(0.5, 0)
    with counting(storage.engine) as ours:
        trial.report(0.5, 1)
        trial.report(0.4, 1)  # reported again: nothing claimed
    with counting(plain_storage.engine) as optunas:
        plain_trial.report(0.5, 1)
        plain_trial.report(0.4, 1)
    claims = [s for s in ours if s.startswith("UPDATE hpsearch_ledger")]
    assert len(claims) == (0 if epochs is None else 1)
    assert len(ours) == len(optunas) + len(claims), (ours, optunas)
    assert ledger.state().epochs_used == (0 if epochs is None else 2)  # type: ignore[union-attr]


def test_provenance_is_written_with_the_trials_start(storage_url: str) -> None:
    storage = open_storage(StorageURL(storage_url, "test"), heartbeat_interval=30)
    assert isinstance(storage, ResilientRDBStorage)
    storage.stamp_trials({"worker": "host:1#0", "host": "host"})
    study = optuna.create_study(storage=storage)
    study.enqueue_trial({"x": 1.0}, user_attrs={"worker": "crashed:9#0", "enqueued": True})
    queued = study.ask()  # a queued trial (a retry carries its crashed worker's name)
    fresh = study.ask()
    for trial in (queued, fresh):
        assert storage.get_trial(trial_id(trial)).user_attrs["worker"] == "host:1#0"
        assert trial.user_attrs["host"] == "host"
    assert storage.get_trial(trial_id(queued)).user_attrs["enqueued"] is True


def test_the_heartbeat_threads_first_beat_is_not_written_again(storage_url: str) -> None:
    """The transaction that starts a trial writes its first heartbeat; Optuna's heartbeat
    thread beats at once after it, which cost a transaction per trial."""
    storage = open_storage(StorageURL(storage_url, "test"), heartbeat_interval=30)
    assert isinstance(storage, ResilientRDBStorage)
    study = optuna.create_study(storage=storage)
    with counting(storage.engine) as statements:
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    writes = [s.split()[0] for s in statements if re.match(r"(INSERT INTO|UPDATE) trial_heart", s)]
    assert writes == ["INSERT"], statements
    trial = study.trials[0]
    with counting(storage.engine) as later:  # a later beat of the same trial is written
        storage.record_heartbeat(trial_id(trial))
    assert any("FROM trial_heartbeats" in s for s in later), later  # (same second: no UPDATE)


def test_the_launchers_workers_join_after_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--workers N` starts every child at once (their start-up overlaps) and the others join
    once the first has: no race to create the study, and no fixed stagger between them."""
    first = tmp_path / "joined"
    monkeypatch.setenv(WAIT_ENV, str(first))
    threading.Timer(0.3, first.touch).start()
    started = time.monotonic()
    wait_for_first(lambda: False)
    assert 0.25 < time.monotonic() - started < 5
    assert WAIT_ENV not in os.environ  # read once: this worker's children are not workers
    monkeypatch.setenv(WAIT_ENV, str(tmp_path / "never"))
    wait_for_first(lambda: True)  # a stop ends the wait
    monkeypatch.setenv(JOINED_ENV, str(tmp_path / "mine"))
    joined()
    assert (tmp_path / "mine").exists()
    assert JOINED_ENV not in os.environ
    joined()  # not started by a launcher: nothing to tell
    wait_for_first(lambda: False)


def test_sqlite_reads_run_beside_another_workers_write(tmp_path: Path) -> None:
    """Every transaction on SQLite took the write lock first (`BEGIN IMMEDIATE`), reads too, so
    N local workers' reads queued behind each other's writes, which plain Optuna's do not."""
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    storage = open_storage(StorageURL(url, "test"))
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    other = sqlite3.connect(tmp_path / "lock.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker in the middle of a write
    try:
        read = threading.Thread(target=lambda: storage.get_all_trials(study_id(study)))
        read.start()
        read.join(timeout=10)
        assert not read.is_alive()  # it waited for the lock (up to two minutes) before
        write = threading.Thread(target=lambda: storage.set_trial_user_attr(trial_id(trial),
                                                                             "k", 1))  # fmt: skip
        write.start()
        write.join(timeout=0.5)
        assert write.is_alive()  # a write still waits for the other's
    finally:
        other.execute("COMMIT")
        other.close()
    write.join(timeout=10)
    assert storage.get_trial(trial_id(trial)).user_attrs == {"k": 1}
