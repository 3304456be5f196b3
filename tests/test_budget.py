"""The study-wide ledger on every real storage: each limit, retry slots, raising the budget."""

from __future__ import annotations

import uuid

import optuna
import pytest

from hpsearch.storage import ResilientRDBStorage, StorageURL, open_storage
from hpsearch.storage.optuna_compat import study_id
from hpsearch.worker.budget import Ledger, Limits


@pytest.fixture
def ledger(storage_url: str) -> Ledger:
    storage = open_storage(StorageURL(storage_url, "test"))
    study = optuna.create_study(study_name=f"b-{uuid.uuid4().hex[:8]}", storage=storage)
    assert isinstance(storage, ResilientRDBStorage)
    return Ledger(storage.engine, study_id(study))


def test_trial_limit_retry_slots_and_a_raised_budget(ledger: Ledger) -> None:
    ledger.set_limits(Limits(n_trials=3))
    assert [ledger.claim() for _ in range(4)] == [True, True, True, False]
    ledger.add_retry_slot()  # a crashed trial's retry does not eat into the user's trials
    assert [ledger.claim(), ledger.claim()] == [True, False]
    state = ledger.state()
    assert state is not None
    assert state.spent_reason(0) == "n_trials reached (3/3)"
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
