"""`status` tells the truth about who works on a study: killed workers and stopped studies."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.storages._rdb.models import TrialHeartbeatModel

from hpsearch.cli import main
from hpsearch.inspect import source
from hpsearch.spec import load_spec
from hpsearch.storage.optuna_compat import trial_id


def _kill_worker_mid_trial(url: str, name: str, worker: str) -> None:
    """What a SIGKILLed worker leaves: its trial RUNNING, its heartbeat an hour old."""
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    trial = study.ask()
    trial.set_user_attr("worker", worker)
    storage.record_heartbeat(trial_id(trial))
    beats = TrialHeartbeatModel.__table__
    with storage.engine.begin() as c:
        now = source.naive(c.execute(sa.select(sa.func.now())).scalar_one())
        c.execute(
            sa.update(beats)
            .where(beats.c.trial_id == trial_id(trial))
            .values(heartbeat=now - dt.timedelta(hours=1))
        )
    storage.engine.dispose()


def test_a_killed_worker_and_a_stopped_study_show_no_live_worker_and_no_eta(
    quadratic_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = quadratic_study(n_trials=3)
    name = load_spec(path).spec.name
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q", "--n-trials", "3"]) == 0
    trials = optuna.load_study(study_name=name, storage=url).trials
    worker = trials[0].user_attrs["worker"]
    _kill_worker_mid_trial(url, name, worker)
    capsys.readouterr()

    assert main(["status", str(path), "--storage", url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # It finished trials a moment ago, but its running trial stopped beating: it is gone.
    assert data["live_workers"] == []
    assert [s["worker"] for s in data["stuck"]] == [worker]

    stop = ["stop", str(path), "--storage", url, "--reason", "enough for today", "--wait", "0"]
    assert main(stop) == 0
    capsys.readouterr()
    assert main(["status", str(path), "--storage", url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stopped"]["reason"] == "enough for today"
    assert data["stopped"]["at"]
    assert data["stopped"]["by"]
    assert (data["eta_s"], data["live_workers"]) == (None, [])
    assert main(["status", str(path), "--storage", url]) == 0
    table = capsys.readouterr().out
    assert "stopped  at " in table
    assert ": enough for today" in table
    assert "stopped: no ETA" in table
    assert "0 live" in table


def test_a_sigkilled_worker_is_gone_at_once_and_a_stopped_study_has_no_eta(
    quadratic_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real worker process, SIGKILLed mid-trial: its heartbeat is still fresh (the grace
    period is long), but on its own machine status sees that its process is gone."""
    path = quadratic_study(n_trials=50, sleep=600, extra="workers: {grace_period: 3600}")
    name = load_spec(path).spec.name
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "--storage", url, "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # a hang guard, not a speed limit
        while not _running(url, name):
            assert worker.poll() is None, "the worker exited before its first trial ran"
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=60)
    stop = ["stop", str(path), "--storage", url, "--reason", "killed one", "--wait", "0"]
    assert main(stop) == 0
    capsys.readouterr()
    assert main(["status", str(path), "--storage", url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["eta_s"], data["live_workers"]) == (None, [])
    assert "is gone (killed)" in data["stuck"][0]["reason"]
    assert main(["status", str(path), "--storage", url]) == 0
    assert "0 live" in capsys.readouterr().out


def _running(url: str, name: str) -> bool:
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:  # not created yet
        return False
    return any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
