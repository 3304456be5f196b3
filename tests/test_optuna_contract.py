"""hpsearch's storage is an Optuna storage: Optuna's own storage tests, run against it.

`optuna.testing.pytest_storages.StorageTestCase` ships with Optuna; here its `storage` fixture
is hpsearch's storage as a worker opens it (heartbeats on), on every backend, and on SQLite also
with Optuna's cache layer on top as `optuna.load_study` adds it, and read through the dashboard's
read-only wrapper. (A budget attached changes only how a trial is created; tests/test_budget.py
and tests/test_worker.py check that path, pickling included.) The heartbeat tests below check
the same contract as Optuna's for stale trials, for any caller of `study.optimize`.
"""

from __future__ import annotations

import pickle
import time
import uuid
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.testing.pytest_storages import StorageTestCase
from optuna.trial import TrialState

from hpsearch.budget import Ledger, Limits
from hpsearch.inspect.dashboard import ReadOnlyStorage
from hpsearch.storage import ResilientRDBStorage, StorageURL, open_storage
from hpsearch.storage.optuna_compat import models, trial_id

BACKENDS = ["sqlite", "postgresql", "mysql"]


def _fresh_database(kind: str, tmp_path: Path) -> Generator[str, None, None]:
    """An empty database: Optuna's tests count the studies they find."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'contract.db'}"
        return
    from conftest import server_database

    yield from server_database(kind)


class _ReadThrough(ReadOnlyStorage):
    """Writes go to the storage, reads through the dashboard's read-only wrapper (its reads
    must be the storage's own, with every signature Optuna calls)."""

    def create_new_study(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.create_new_study(*args, **kwargs)

    def delete_study(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.delete_study(*args, **kwargs)

    def set_study_user_attr(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.set_study_user_attr(*args, **kwargs)

    def set_study_system_attr(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.set_study_system_attr(*args, **kwargs)

    def create_new_trial(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.create_new_trial(*args, **kwargs)

    def set_trial_param(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.set_trial_param(*args, **kwargs)

    def set_trial_state_values(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.set_trial_state_values(*args, **kwargs)

    def set_trial_intermediate_value(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.set_trial_intermediate_value(*args, **kwargs)

    def set_trial_user_attr(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.set_trial_user_attr(*args, **kwargs)

    def set_trial_system_attr(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.set_trial_system_attr(*args, **kwargs)


@pytest.fixture(scope="module")
def worker_storages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One database and one worker storage per backend for this module, emptied before each
    test (a new database and Optuna's tables for each of 300 tests took minutes)."""
    made = {kind: _fresh_database(kind, tmp_path_factory.mktemp(kind)) for kind in BACKENDS}
    storages: dict[str, Any] = {}
    try:
        for kind, database in made.items():
            url = StorageURL(next(database), "test")
            storages[kind] = open_storage(url, heartbeat_interval=60, grace_period=120)
        yield storages
    finally:
        for rdb in storages.values():
            rdb.engine.dispose()
        for database in made.values():
            database.close()


def _emptied(rdb: ResilientRDBStorage) -> None:
    """Delete every study and trial (Optuna's version tables stay)."""
    tables = [t for t in models.BaseModel.metadata.sorted_tables
              if t.name not in ("version_info", "alembic_version")]  # fmt: skip
    with rdb.engine.begin() as c:
        for table in reversed(tables):
            c.execute(table.delete())


@pytest.fixture(
    params=[(b, layer) for b in BACKENDS for layer in ("worker", "cached", "read-through")
            if b == "sqlite" or layer == "worker"],  # the layers are the same code on each
    ids=lambda p: f"{p[0]}-{p[1]}",
)  # fmt: skip
def storage(request: pytest.FixtureRequest, worker_storages: dict[str, Any]) -> BaseStorage:
    kind, layer = request.param
    rdb = worker_storages[kind]
    assert isinstance(rdb, ResilientRDBStorage)
    _emptied(rdb)
    if layer == "cached":
        return optuna.storages.get_storage(rdb)
    if layer == "read-through":
        return _ReadThrough(rdb)
    return rdb


class TestOptunaStorageContract(StorageTestCase):
    """Every test of Optuna's storage test case, on hpsearch's storage."""


@pytest.fixture(params=BACKENDS)
def heartbeat_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    databases = _fresh_database(request.param, tmp_path)
    yield next(databases)
    databases.close()


def _stale_trial(storage: BaseStorage) -> tuple[optuna.Study, optuna.Trial]:
    """A trial whose worker beat once and then died (its heartbeat is older than the grace)."""
    study = optuna.create_study(storage=storage, study_name=f"hb-{uuid.uuid4().hex[:6]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ask() outside optimize: no heartbeat
        trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.report(0.5, 1)
    study._storage.record_heartbeat(trial_id(trial))  # type: ignore[attr-defined]  # noqa: SLF001
    time.sleep(2.5)  # grace period 1 s
    return study, trial


def test_optimize_fails_and_retries_a_dead_workers_trial(heartbeat_url: str) -> None:
    """Optuna's stale check found nothing in hpsearch's storage: for any caller but hpsearch's
    own worker loop (the Python API, `RetryHeartbeatStaleTrialCallback`) a dead worker's trial
    stayed RUNNING forever."""
    storage = open_storage(
        StorageURL(heartbeat_url, "test"), heartbeat_interval=1, grace_period=1,
        stale_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
    )  # fmt: skip
    study, dead = _stale_trial(storage)
    assert storage.get_trial(trial_id(dead)).state == TrialState.RUNNING
    study.optimize(lambda t: 1.0, n_trials=1)  # Optuna runs `fail_stale_trials` first
    failed = storage.get_trial(trial_id(dead))
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"].endswith("stopped sending heartbeats (killed, "
                                                     "preempted or lost)")  # fmt: skip
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1
    assert retried[0].params == {"x": failed.params["x"]}


def test_the_stale_hook_names_the_dead_trial(heartbeat_url: str) -> None:
    url = StorageURL(heartbeat_url, "test")
    storage = open_storage(url, heartbeat_interval=1, grace_period=1)
    study, dead = _stale_trial(storage)
    assert isinstance(storage, ResilientRDBStorage)
    assert storage._get_stale_trial_ids(study._study_id) == [trial_id(dead)]  # noqa: SLF001
    again = open_storage(url, heartbeat_interval=1, grace_period=1)  # another process
    optuna.storages.fail_stale_trials(
        optuna.load_study(study_name=study.study_name, storage=again)
    )
    assert storage.get_trial(trial_id(dead)).state == TrialState.FAIL


def test_a_finished_trials_attributes_are_final(heartbeat_url: str) -> None:
    """hpsearch writes a trial's attributes in one transaction; that write too refuses a
    finished trial, as Optuna's `set_trial_user_attr` does."""
    storage = open_storage(StorageURL(heartbeat_url, "test"))
    assert isinstance(storage, ResilientRDBStorage)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_user_attrs(trial_id(trial), {"late": 1})
    assert "late" not in storage.get_trial(trial_id(trial)).user_attrs


def test_a_worker_storage_survives_pickling(heartbeat_url: str) -> None:
    storage = open_storage(StorageURL(heartbeat_url, "test"), heartbeat_interval=30)
    assert isinstance(storage, ResilientRDBStorage)
    study = optuna.create_study(storage=storage)
    ledger = Ledger(storage.engine, study._study_id, uid="p")  # noqa: SLF001
    ledger.set_limits(Limits(n_trials=5))
    storage.use_budget(study._study_id, ledger)  # noqa: SLF001
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.get_all_studies()[0].study_name == study.study_name
    assert isinstance(copy.engine, sa.Engine)
