"""`hpsearch init` end to end: a generated image folder becomes a study that runs as written."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from data_factory import make_image_folder
from optuna.trial import TrialState

from hpsearch.cli import main
from hpsearch.guide.weights import TEST_NETWORK_ENV
from hpsearch.spec.reader import read_yaml


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(TEST_NETWORK_ENV, "offline")


def _folder(tmp_path: Path) -> Path:
    """Four classes of 16x16 images, with a truncated file and grey, RGBA and palette ones."""
    classes = ("circle", "square", "triangle", "star")
    return make_image_folder(tmp_path / "shapes", classes=classes, per_class=15).root


@pytest.mark.slow
def test_a_folder_of_images_goes_through_init_and_run_with_no_edits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, study = _folder(tmp_path), tmp_path / "study.yaml"
    argv = ["init", str(root), "--budget", "3", "--max-epochs", "3", "-o", str(study)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {study}: small_cnn from scratch, searching lr, weight_decay")
    assert "4 classes, 63 readable images" in out
    assert main(["validate", str(study)]) == 0
    assert not [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("  warning")
    ]
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(study), "--storage", url, "-q"]) == 0
    trials = optuna.load_study(study_name="shapes", storage=url).trials
    assert len(trials) == 3  # the budget: 3 trainings
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    data, _ = read_yaml(study)
    first = trials[0]
    assert first.params == data["enqueue"][0]  # the published defaults ran first
    assert first.user_attrs["epochs_run"] <= 3  # --max-epochs


@pytest.mark.slow
def test_a_time_budget_is_spent_without_overrunning_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, study = _folder(tmp_path), tmp_path / "study.yaml"
    assert main(["init", str(root), "--budget", "15s", "--max-epochs", "3", "-o", str(study)]) == 0
    data, _ = read_yaml(study)
    assert data["budget"] == {"gpu_hours": round(15 / 3600, 4)}
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(study), "--storage", url, "-q"]) == 0
    capsys.readouterr()
    assert main(["status", str(study), "--storage", url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    trials = optuna.load_study(study_name="shapes", storage=url).trials
    longest = max((t.duration.total_seconds() for t in trials if t.duration), default=0.0)
    assert status["budget"]["spent"].startswith("gpu_hours reached")
    assert len(trials) >= 2
    # Running trials finish once the budget is spent: at most one trial's time beyond it.
    assert status["budget"]["gpu_hours"] * 3600 <= 15 + longest


def test_init_refuses_to_overwrite_a_file_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "study.yaml"
    study.write_text("name: mine\n")
    assert main(["init", str(tmp_path), "-o", str(study)]) == 2
    assert "the file exists; pass --force" in capsys.readouterr().err
    assert study.read_text() == "name: mine\n"


@pytest.mark.parametrize(
    ("setup", "message"),
    [("missing", "DATA_DIR {root} is not a folder"),
     ("one class", "must hold at least 2 class sub-folders"),
     ("bad budget", "--budget must be a number of full trainings (20) or device time")],
)  # fmt: skip
def test_init_explains_what_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, message: str
) -> None:
    root = tmp_path / "data"
    if setup != "missing":
        make_image_folder(root, classes=("a", "b"))
    if setup == "one class":
        for path in sorted((root / "b").iterdir()):
            path.rename(root / "a" / f"b-{path.name}")
        (root / "b").rmdir()
    budget = "lots" if setup == "bad budget" else "20"
    assert main(["init", str(root), "--budget", budget, "-o", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.format(root=root) in err
    assert not (tmp_path / "s.yaml").exists()
