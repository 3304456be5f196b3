"""Every metric an objective reports is kept with its trial: final values and per-step curves.

(The trainer's own metrics are checked in test_trainer_objective.py, on real training.)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.cli import main
from hpsearch.study import CURVES_ATTR, MetricLog

FUNCTION = """
def train(params, report):
    x = params["x"]
    for step in range(1, 4):
        report({"loss": (x - 2) ** 2 + 1 / step, "acc": step / 10, "lr": 0.1 / step}, step)
    return {"loss": (x - 2) ** 2, "acc": 0.3, "seconds": 1.5, "note": "text is not a metric"}
"""

PROGRAM = """
import sys
for step in (1, 2):
    print(f"hpsearch-report step={step} acc={step / 4} loss={1 / step}", flush=True)
print("hpsearch-result acc=0.5 loss=0.5 images_per_s=900")
"""


def _function_study(
    write_study: Callable[..., Path], folder: Path, name: str, source: str, space: str, n: int
) -> Path:
    """A study of `fn.py:train` (written from `source`) with no pruner, minimising `loss`."""
    (folder / "fn.py").write_text(source)
    return write_study(f"""
        name: {name}
        metric: loss
        direction: minimize
        pruner: {{type: none}}
        objective: {{function: fn.py:train}}
        search_space: {space}
        budget: {{n_trials: {n}}}
    """)


X_SPACE = "{x: {type: float, low: 0.0, high: 4.0}}"


def test_a_functions_other_metrics_are_kept_per_step_and_exported(
    write_study: Callable[..., Path], tmp_path: Path, unique_name: str
) -> None:
    path = _function_study(write_study, tmp_path, unique_name, FUNCTION, X_SPACE, 2)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    for trial in optuna.load_study(study_name=unique_name, storage=url).trials:
        assert trial.state == TrialState.COMPLETE
        assert (trial.user_attrs["acc"], trial.user_attrs["seconds"]) == (0.3, 1.5)
        assert "note" not in trial.user_attrs
        assert "loss" not in trial.user_attrs
        assert trial.user_attrs[CURVES_ATTR] == {
            "step": [1, 2, 3],
            "acc": [0.1, 0.2, 0.3],
            "lr": [0.1, 0.05, 0.0333333],
        }
    out = tmp_path / "trials.jsonl"
    assert main(["export", str(path), "--storage", url, "-o", str(out)]) == 0
    row = json.loads(out.read_text().splitlines()[0])
    assert json.loads(row["curve_acc"]) == [0.1, 0.2, 0.3]
    assert len(json.loads(row["curve_loss"])) == 3  # the study metric, from Optuna's own
    assert "user_attrs_hpsearch:curves" not in row


def test_a_commands_printed_metrics_are_kept(
    write_study: Callable[..., Path], tmp_path: Path, unique_name: str
) -> None:
    (tmp_path / "train.py").write_text(PROGRAM)
    path = write_study(f"""
        name: {unique_name}
        metric: acc
        direction: maximize
        pruner: {{type: none}}
        objective: {{command: "{sys.executable} train.py {{lr}}"}}
        search_space: {{lr: {{type: float, low: 0.0, high: 1.0}}}}
        budget: {{n_trials: 1}}
    """)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    (trial,) = optuna.load_study(study_name=unique_name, storage=url).trials
    assert trial.user_attrs["loss"] == 0.5
    assert trial.user_attrs["images_per_s"] == 900
    assert trial.user_attrs[CURVES_ATTR] == {"step": [1, 2], "loss": [1.0, 0.5]}


def test_a_pruned_trial_keeps_what_it_reported_and_long_curves_fit_one_field() -> None:
    log = MetricLog(["val_accuracy"])
    for epoch in range(1, 2001):
        log.add({"val_accuracy": 0.5, "val_loss": 1 / epoch, "epoch": epoch}, epoch)
    attrs = log.attrs(None, {"val_loss": 123.0})  # an attribute of that name stays as it was
    assert "val_loss" not in attrs
    curves = attrs[CURVES_ATTR]
    assert len(json.dumps(curves)) <= 50_000
    assert curves["step"][0] == 1
    assert curves["step"][-1] == 2000
    assert len(curves["step"]) == len(curves["val_loss"]) > 500
    assert set(curves) == {"step", "val_loss"}


NAMESAKE = """
def train(params, report):
    # A metric named like a parameter: the schedule's learning rate beside the searched `lr`.
    for step in (1, 2):
        report({"loss": params["lr"] / step, "lr": params["lr"] / 4 / step}, step)
    return {"loss": params["lr"] / 2, "lr": params["lr"] / 8, "acc": 0.5}
"""


def test_best_shows_no_attribute_under_a_parameters_name(
    write_study: Callable[..., Path],
    tmp_path: Path,
    unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`best` printed `# attrs: lr=0.0015` above `lr: 0.003`: two figures for one name."""
    space = "{lr: {type: float, low: 0.001, high: 0.01}}"
    path = _function_study(write_study, tmp_path, unique_name, NAMESAKE, space, 1)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    capsys.readouterr()
    assert main(["best", str(path), "--storage", url, "-q"]) == 0
    out = capsys.readouterr().out
    attrs = next(line for line in out.splitlines() if line.startswith("# attrs:"))
    assert attrs == "# attrs: acc=0.5"
    assert out.count("lr") == 1  # the parameter only


SAVES = """
def train(params, report):
    path = report.directory / "model.pt"
    path.write_text("weights")
    report.keep_checkpoint(path)
    return {"loss": params["x"]}
"""


def test_export_lists_no_checkpoint_whose_file_was_deleted(
    write_study: Callable[..., Path], tmp_path: Path, unique_name: str
) -> None:
    """`export` listed checkpoints a user had deleted: a listed path must open."""
    path = _function_study(write_study, tmp_path, unique_name, SAVES, X_SPACE, 2)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    argv = ["--storage", url, "-q"]
    assert main(["run", str(path), *argv, "--artifacts", str(tmp_path / "a")]) == 0
    trials = optuna.load_study(study_name=unique_name, storage=url).trials
    Path(trials[0].user_attrs["checkpoint"]).unlink()
    out = tmp_path / "trials.jsonl"
    assert main(["export", str(path), *argv, "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    listed = {row["number"]: row.get("user_attrs_checkpoint") for row in rows}
    assert listed == {0: None, 1: trials[1].user_attrs["checkpoint"]}
