"""The Python API: the same study, through the same rules, as the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import fresh_venv
from optuna.trial import TrialState

import hpsearch
from hpsearch.cli import main


def test_the_api_finds_what_the_cli_finds_for_the_same_seed(
    quadratic_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    path = quadratic_study(n_trials=5)
    cli_url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["run", str(path), "--storage", cli_url, "-q"]) == 0
    cli = optuna.load_study(study_name=unique_name, storage=cli_url)
    study = hpsearch.run(path, storage=f"sqlite:///{tmp_path / 'api.db'}")
    assert isinstance(study, optuna.Study)
    assert study.best_value == cli.best_value
    assert [t.params for t in study.trials] == [t.params for t in cli.trials]
    assert study.metric_names == ["loss"]  # named as the dashboard shows it


def test_a_python_objective_and_a_study_made_by_hand(
    write_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    """`run(path, objective)` for a notebook; `create_study` for an Optuna user's own loop,
    with the study-wide budget still exact."""
    path = write_study(f"""
        name: {unique_name}
        metric: loss
        sampler: {{type: random, seed: 1}}
        pruner: {{type: none}}
        budget: {{n_trials: 4}}
        objective: {{function: objective.py:quadratic, sleep: 0.0}}
        search_space:
          x: {{type: float, low: -5, high: 5}}
          batch_size: {{type: power_of_two, low: 8, high: 64}}
    """)  # fmt: skip
    seen: list[dict[str, Any]] = []

    def objective(params: dict[str, Any], report: Callable[..., None]) -> float:
        seen.append(params)
        report({"loss": params["x"] ** 2}, 1)
        return float(params["x"] ** 2)

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = hpsearch.run(path, objective, storage=url)
    assert len(seen) == 4
    assert all(p["batch_size"] in (8, 16, 32, 64) for p in seen)  # values, not exponents
    assert all(p["sleep"] == 0.0 for p in seen)  # the file's fixed options
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    joined = hpsearch.create_study(path, storage=url, n_trials=6)  # an explicit budget change
    # Optuna's loop ends at the budget as under MaxTrialsCallback: no exception out of it.
    joined.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2, n_trials=10)
    assert len(joined.trials) == 6  # 10 asked for, the study-wide budget says 6
    assert isinstance(joined, optuna.Study)
    with pytest.raises(hpsearch.BudgetSpent):  # a hand-written ask/tell loop is told
        joined.ask()


def test_the_api_refuses_what_the_cli_refuses(
    quadratic_study: Callable[..., Path], tmp_path: Path
) -> None:
    path = quadratic_study()
    path.write_text(path.read_text().replace("high: 5", "high: four"))
    with pytest.raises(hpsearch.SpecError, match=r"search_space.x.high"):
        hpsearch.load(path)


@pytest.mark.slow
def test_the_installed_wheel_runs_from_any_folder(tmp_path: Path) -> None:
    """pip-installed, outside any checkout: an example from the package runs through the CLI
    and through the API to the same best value; the database lands in this user's data folder
    as the docs say; `validate` writes nothing; nothing lands in the repository around it."""
    root = Path(__file__).resolve().parent.parent
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(root)], check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("hpsearch-*.whl")
    # This environment's packages (torch...) through a .pth file, hpsearch itself from the wheel.
    python_path, purelib = fresh_venv(tmp_path)
    python, venv = str(python_path), python_path.parent.parent
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(purelib)
    work = tmp_path / "someone" / "project"
    work.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(work)], check=True)  # an unrelated repository
    data = tmp_path / "xdg"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "XDG_DATA_HOME": str(data), "HPSEARCH_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip

    def hpsearch_(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, "-m", "hpsearch", *args], cwd=work, env=env,
                              capture_output=True, text=True)  # fmt: skip

    assert hpsearch_("examples").returncode == 0
    study_file = work / "quickstart.yaml"
    study_file.write_text(study_file.read_text().replace("n_trials: 24", "n_trials: 3"))
    before = sorted(p.name for p in work.iterdir())
    assert hpsearch_("validate", "quickstart.yaml").returncode == 0
    assert not data.exists()  # validate writes nothing
    ran = hpsearch_("run", "quickstart.yaml", "-q")
    assert ran.returncode == 0, ran.stderr
    # This project's own database in this user's data folder (projects/<folder>-<hash>/).
    (db,) = (data / "hpsearch" / "projects").glob("project-*/hpsearch.db")
    assert db.is_file()
    assert sorted(p.name for p in work.iterdir()) == before
    script = (
        "import json, optuna, hpsearch\n"
        f"s = hpsearch.run('quickstart.yaml', storage='sqlite:///{tmp_path / 'api.db'}')\n"
        "cli = optuna.load_study(study_name=s.study_name,\n"
        "                        storage=hpsearch.storage_url('quickstart.yaml').secret_url)\n"
        "print(json.dumps([s.best_value, cli.best_value]))\n"
    )
    api = subprocess.run([python, "-c", script], cwd=work, env=env, capture_output=True,
                         text=True)  # fmt: skip
    assert api.returncode == 0, api.stderr
    api_best, cli_best = json.loads(api.stdout.strip().splitlines()[-1])
    assert api_best == cli_best
