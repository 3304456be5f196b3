"""Retries of crashed trials: same parameters, bounded, and not for a trial that kills workers."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpsearch.worker import RetryPolicy


def _failed(
    study: optuna.Study, *, steps: int = 0, **user_attrs: object
) -> optuna.trial.FrozenTrial:
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
            user_attrs=dict(user_attrs),
            intermediate_values={step: 0.1 * step for step in range(1, steps + 1)},
        )
    )
    return study.trials[-1]


def test_a_crashed_trial_is_queued_again_with_its_parameters(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}")
    assert RetryPolicy(max_retries=2).retry(study, _failed(study, worker="a"), crashed=True)
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING
    assert retry.params == {"x": 0.5}
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.system_attrs["retry_history"] == [0]
    assert retry.user_attrs["crashed_workers"] == ["a"]


def test_two_workers_lost_under_a_trial_do_not_make_it_a_failure(tmp_path: Path) -> None:
    """On a preemptible fleet two different workers dying under one trial is common: it is a
    crash of the machines, retried; a trial that kills its worker at the same step again is a
    failure of the trial, not retried."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}")
    elsewhere = _failed(study, steps=7, worker="b", crashed_workers=["a"], crash_steps=[3])
    assert RetryPolicy(max_retries=5).retry(study, elsewhere, crashed=True)
    assert study.trials[-1].user_attrs["crash_steps"] == [3, 7]
    again = _failed(study, steps=3, worker="b", crashed_workers=["a"], crash_steps=[3])
    n = len(study.trials)
    assert not RetryPolicy(max_retries=5).retry(study, again, crashed=True)
    assert len(study.trials) == n
    # A worker stopped by SIGTERM is not the trial's fault: that retry is still made.
    assert RetryPolicy(max_retries=5).retry(study, again, crashed=False)


def test_retries_are_bounded(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}")
    policy = RetryPolicy(max_retries=1)
    assert policy.retry(study, _failed(study, worker="a"), crashed=False)
    retried = study.trials[-1]
    again = optuna.trial.create_trial(
        state=TrialState.FAIL, params=retried.params, distributions=retried.distributions,
        system_attrs=retried.system_attrs,
    )  # fmt: skip
    study.add_trial(again)
    assert not policy.retry(study, study.trials[-1], crashed=False)
