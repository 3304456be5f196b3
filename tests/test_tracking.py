"""`tracking:`: each trial sent to MLflow (a real SQLite tracking store made by the test), to
TensorBoard (event files read back with TensorBoard's own reader), from a real trainer study, and
to W&B offline (its run files read back)."""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

import hpsearch
from hpsearch.cli import main
from hpsearch.errors import SpecError
from hpsearch.spec import load_spec

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

TRACKED_STUDY = """
name: {name}
metric: val_accuracy
sampler: {{type: random, seed: 1}}
pruner: {{type: none}}
budget: {{n_trials: 3}}
tracking:
  mlflow: {{tracking_uri: mlflow.db, experiment: tuning}}
  tensorboard: {{log_dir: tb}}
objective:
  trainer: image_classification
  model: small_cnn
  dataset: {{name: digits}}
  epochs: 2
  max_train_batches: 2
  device: cpu
  keep_checkpoints: 1
search_space:
  batch_size: {{type: power_of_two, low: 8, high: 32}}
  lr: {{type: float, low: 0.001, high: 0.1, log: true}}
"""


@pytest.mark.slow
def test_a_trainer_study_lands_in_mlflow_and_tensorboard(
    write_study: Callable[..., Path], unique_name: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # a worker's working folder: nothing lands there
    path = write_study(TRACKED_STUDY.format(name=unique_name))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = hpsearch.run(path, storage=storage)
    trials = {t.number: t for t in study.trials}
    assert len(trials) == 3

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("tuning")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
    assert parent.data.tags["hpsearch.study"] == unique_name
    children = {int(r.data.tags["hpsearch.trial"]): r for r in runs if r is not parent}
    assert sorted(children) == sorted(trials)  # one run per trial
    for number, run in children.items():
        trial = trials[number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name == f"trial-{number:05d}"
        assert run.data.tags["hpsearch.state"] == trial.state.name
        assert run.info.status == "FINISHED"
        # The readable batch size (not Optuna's exponent), and every other parameter.
        assert run.data.params["batch_size"] == str(trial.user_attrs["batch_size"])
        assert "log2_batch_size" not in run.data.params
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        # Every metric at every epoch, as the trial reported them.
        for metric in ("val_loss", "val_accuracy"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert [m.step for m in history] == [1, 2]
        accuracy = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert accuracy[-1].value == pytest.approx(trial.intermediate_values[2])
    # The kept checkpoint (the best trial's) is an artifact of its run.
    best = study.best_trial
    artifacts = client.list_artifacts(children[best.number].info.run_id, "checkpoint")
    assert [Path(a.path).name for a in artifacts] == [f"trial-{best.number:05d}.pt"]
    # Beside the store, not in whatever folder the worker ran in.
    assert list((tmp_path / "mlartifacts").rglob(f"trial-{best.number:05d}.pt"))
    assert not list((tmp_path / "elsewhere").iterdir())
    # Nothing about the study's storage reaches the tracker.
    store = (tmp_path / "mlflow.db").read_bytes()
    assert b"optuna.db" not in store

    for number, trial in trials.items():
        events = EventAccumulator(str(tmp_path / "tb" / unique_name / f"trial-{number:05d}"))
        events.Reload()
        scalars = events.Scalars("val_accuracy")
        assert [s.step for s in scalars] == [1, 2]
        assert scalars[-1].value == pytest.approx(trial.intermediate_values[2], rel=1e-6)
        assert [s.step for s in events.Scalars("val_loss")] == [1, 2]
        assert trial.state == TrialState.COMPLETE


def test_a_missing_tracker_package_is_one_line_naming_the_extra(
    write_study: Callable[..., Path], unique_name: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    """The dev install has every extra: a package that is not installed is faked here."""
    body = f"""
    name: {unique_name}
    metric: loss
    tracking: {{mlflow: {{}}}}
    objective: {{function: objective.py:quadratic}}
    search_space: {{x: {{type: float, low: 0, high: 1}}}}
    """
    path = write_study(body)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what find_spec reports as not installed
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "tracking.mlflow: needs the mlflow package" in err
    assert "pip install 'hpsearch[mlflow]'" in err
    storage = tmp_path / "db.sqlite"
    with pytest.raises(hpsearch.HpsearchError, match=r"pip install 'hpsearch\[mlflow\]'"):
        hpsearch.run(path, storage=f"sqlite:///{storage}")
    assert not storage.exists()  # said before any study is made


def test_a_password_in_the_tracking_uri_is_refused(write_study: Callable[..., Path]) -> None:
    body = """
    name: s
    metric: loss
    tracking: {mlflow: {tracking_uri: "https://me:hunter2@mlflow.example.com"}}
    objective: {function: objective.py:quadratic}
    search_space: {x: {type: float, low: 0, high: 1}}
    """
    with pytest.raises(
        SpecError, match=r"tracking.mlflow.tracking_uri: a password must never"
    ) as e:
        load_spec(write_study(body))
    assert "hunter2" not in str(e.value)


@pytest.mark.slow
def test_a_tracker_that_fails_never_fails_the_trial(
    write_study: Callable[..., Path], unique_name: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """An MLflow server that is away (nothing listens on the port): the study goes on."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    body = f"""
    name: {unique_name}
    metric: loss
    budget: {{n_trials: 2}}
    tracking: {{mlflow: {{tracking_uri: "http://127.0.0.1:9"}}}}
    objective: {{function: objective.py:quadratic}}
    search_space: {{x: {{type: float, low: 0, high: 1}}}}
    """
    study = hpsearch.run(write_study(body), storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert "is not sent to MlflowTracker any more" in caplog.text


def _wandb_records(path: Path) -> Iterator[Any]:
    """The records of an offline W&B run file (`run-<id>.wandb`): LevelDB's log format (32 KiB
    blocks of checksummed chunks) after a 7-byte header, each record a protobuf `Record`. W&B's
    own Python reader is gone from recent releases (the Go core reads them)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7]) if left >= 7 else (0, 0)
        if left < 7 or (length == 0 and kind == 0):  # a block's padding
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.mark.slow  # W&B starts its service process for each run: seconds each
def test_a_study_lands_in_offline_wandb_runs(
    write_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    body = f"""
    name: {unique_name}
    metric: loss
    sampler: {{type: random, seed: 0}}
    budget: {{n_trials: 2}}
    tracking: {{wandb: {{mode: offline, dir: wb}}}}
    objective: {{function: objective.py:quadratic}}
    search_space: {{x: {{type: float, low: 0, high: 4}}}}
    """
    study = hpsearch.run(write_study(body), storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    runs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2  # one run per trial
    seen = {}
    for path in runs:
        name, group, config, steps, summary = "", "", {}, {}, {}
        for record in _wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                name, group = record.run.display_name, record.run.run_group
                config = {i.key: json.loads(i.value_json) for i in record.run.config.update}
            elif kind == "history":
                item = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
                steps[int(item["_step"])] = json.loads(item["loss"])
            elif kind == "summary":
                summary.update({i.key: json.loads(i.value_json) for i in record.summary.update})
        seen[name] = (group, config, steps, summary)
    for trial in study.trials:
        group, config, steps, summary = seen[f"trial-{trial.number:05d}"]
        assert group == unique_name
        assert config["x"] == pytest.approx(trial.params["x"])
        assert steps == pytest.approx(trial.intermediate_values)  # every epoch's loss
        assert summary["state"] == trial.state.name
