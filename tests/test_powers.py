"""Power-of-two parameters: sampled as their exponent, stored beside it as the value meant."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

import hpsearch
from hpsearch.cli import main
from hpsearch.spec import load_spec
from hpsearch.study import (
    ENCODING_ATTR,
    SPACE_ATTR,
    read_attr,
    space_document,
    write_attr,
)

SPACE = """
search_space:
  x: {x}
  batch_size: {{type: power_of_two, low: 16, high: 128}}
sampler: {sampler}
"""
X = "{type: float, low: -5.0, high: 5.0}"


@pytest.fixture
def study_file(write_study: Callable[..., Path], unique_name: str) -> Callable[..., Path]:
    def make(sampler: str, *, n_trials: int = 6, x: str = X) -> Path:
        body = f"name: {unique_name}\nmetric: loss\ndirection: minimize\n"
        body += f"budget: {{n_trials: {n_trials}}}\npruner: {{type: none}}\n"
        body += "objective: {function: objective.py:quadratic}\n"
        return write_study(body + SPACE.format(sampler=sampler, x=x))

    return make


SAMPLERS = [
    "{type: tpe, n_startup_trials: 3}",
    "{type: random}",
    "{type: gp, n_startup_trials: 3}",
    "{type: qmc}",
    "{type: grid}",
]


@pytest.mark.parametrize("sampler", SAMPLERS + [None], ids=lambda s: (s or "default")[:10])
def test_every_sampler_stores_the_batch_size_as_a_power_of_two(
    study_file: Callable[..., Path], sampler: str | None, tmp_path: Path
) -> None:
    x = "{type: float, low: -5.0, high: 5.0, step: 2.5}" if sampler == SAMPLERS[-1] else X
    path = study_file(sampler or "{type: auto}", n_trials=10, x=x)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    study = optuna.load_study(study_name=load_spec(path).spec.name, storage=url)
    for trial in study.trials:
        # The value a person means, beside the exponent the sampler searches.
        assert trial.params["batch_size"] == 2 ** trial.params["log2_batch_size"]
        assert trial.params["batch_size"] in (16, 32, 64, 128)
        assert trial.distributions["batch_size"].single()  # no sampler models it
    assert study.best_params["batch_size"] in (16, 32, 64, 128)


def test_the_python_api_and_the_optuna_cli_show_the_batch_size(
    study_file: Callable[..., Path], tmp_path: Path
) -> None:
    path = study_file("{type: random, seed: 1}", n_trials=4)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    result = hpsearch.run(path, storage=url)
    assert result.best_params["batch_size"] in (16, 32, 64, 128)
    name = load_spec(path).spec.name
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "optuna"), "trials", "--study-name", name,
         "--storage", url, "-f", "json"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    rows = json.loads(shown)
    assert {row["params"]["batch_size"] for row in rows} <= {16, 32, 64, 128}


def test_a_study_made_with_exponents_keeps_them(
    study_file: Callable[..., Path], tmp_path: Path
) -> None:
    """A study an older hpsearch made (`log2_batch_size`, no encoding attribute) is joined,
    sampled and inspected as before: one parameter name for the whole study."""
    path = study_file("{type: tpe}", n_trials=4)
    loaded = load_spec(path)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    old = optuna.create_study(study_name=loaded.spec.name, storage=url)
    write_attr(old, SPACE_ATTR, space_document(loaded.spec))
    write_attr(old, "hpsearch:ready", True)
    old.enqueue_trial({"x": 1.0, "log2_batch_size": 5})
    trial = old.ask({"x": optuna.distributions.FloatDistribution(-5, 5),
                     "log2_batch_size": optuna.distributions.IntDistribution(4, 7)})  # fmt: skip
    old.tell(trial, 1.0)
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    study = optuna.load_study(study_name=loaded.spec.name, storage=url)
    assert len(study.trials) > 1  # the old trial and the new ones
    for t in study.trials:
        assert "batch_size" not in t.params
        assert 4 <= t.params["log2_batch_size"] <= 7
    assert main(["best", str(path), "--storage", url]) == 0


def test_a_new_study_records_how_it_stores_powers(
    study_file: Callable[..., Path], tmp_path: Path
) -> None:
    path = study_file("{type: tpe}", n_trials=1)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    study = optuna.load_study(study_name=load_spec(path).spec.name, storage=url)
    assert read_attr(study, ENCODING_ATTR) == "value"


def _spec(sampler: str) -> hpsearch.spec.StudySpec:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(
            "name: s\nmetric: loss\ndirection: minimize\nobjective: {function: o.py:f}\n"
            + SPACE.format(sampler=sampler, x=X)
        )
        return load_spec(path).spec
