"""Power-of-two parameters: stored as the value meant (`batch_size: 32`), sampled as exponents."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import IntDistribution

import hpsearch
from hpsearch.cli import main
from hpsearch.spec import load_spec
from hpsearch.study import (
    ENCODING_ATTR,
    EXPONENT,
    SPACE_ATTR,
    VALUE,
    make_sampler,
    read_attr,
    space_document,
    suggest,
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
    "{type: cmaes, n_startup_trials: 3}",
    "{type: nsga2, population_size: 4}",
    "{type: grid}",
]
POWERS = {16, 32, 64, 128}


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
        # The value a person means, and nothing else: no exponent beside it.
        assert set(trial.params) == {"x", "batch_size"}
        assert trial.params["batch_size"] in POWERS
        assert trial.distributions["batch_size"] == IntDistribution(16, 128, log=True)
    assert study.best_params["batch_size"] in POWERS


@pytest.mark.parametrize("sampler", [*SAMPLERS, "{type: auto}"], ids=lambda s: s[:10])
def test_the_sampler_proposes_what_it_proposed_when_the_exponent_was_stored(
    sampler: str,
) -> None:
    """Search quality kept: `PowersOfTwo` shows the wrapped sampler the trials it would see if
    the exponent were stored, so a seeded study proposes the same points either way."""
    x = "{type: float, low: -5.0, high: 5.0, step: 2.5}" if sampler == SAMPLERS[-1] else X
    spec = _spec(sampler.replace("}", ", seed: 3}"), x=x)

    def proposals(encoding: str) -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=make_sampler(spec, encoding=encoding))
        seen: list[dict[str, Any]] = []

        def objective(trial: optuna.Trial) -> float:
            values = suggest(trial, spec, encoding=encoding)
            seen.append(values)
            for step in range(1, 4):  # curves, for the default search's pruned-trial estimates
                trial.report((values["x"] - 2) ** 2 + values["batch_size"] / 64 / step, step)
            return float((values["x"] - 2) ** 2 + abs(math.log2(values["batch_size"]) - 5))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.optimize(objective, n_trials=14)
        return seen

    stored = proposals(VALUE)
    assert stored == proposals(EXPONENT)
    assert {v["batch_size"] for v in stored} <= POWERS
    assert len({v["batch_size"] for v in stored}) > 1


def test_the_python_api_and_the_optuna_cli_show_the_batch_size(
    study_file: Callable[..., Path], tmp_path: Path
) -> None:
    path = study_file("{type: random, seed: 1}", n_trials=4)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    result = hpsearch.run(path, storage=url)
    assert result.best_params["batch_size"] in POWERS
    assert set(result.best_params) == {"x", "batch_size"}
    name = load_spec(path).spec.name
    optuna_cli = str(Path(sys.executable).parent / "optuna")
    for command in (["trials", "-f", "json"], ["best-trial", "-f", "json"]):
        shown = subprocess.run(
            [optuna_cli, *command, "--study-name", name, "--storage", url],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout  # fmt: skip
        assert "log2" not in shown
        rows = json.loads(shown)
        rows = rows if isinstance(rows, list) else [rows]
        assert {row["params"]["batch_size"] for row in rows} <= POWERS


def test_a_study_made_with_the_exponent_and_the_value_keeps_both(
    study_file: Callable[..., Path], tmp_path: Path
) -> None:
    """A study made while hpsearch stored the value beside the exponent (encoding "value") is
    joined, sampled and inspected as before."""
    path = study_file("{type: tpe}", n_trials=4)
    loaded = load_spec(path)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    old = optuna.create_study(study_name=loaded.spec.name, storage=url)
    write_attr(old, ENCODING_ATTR, "value")
    write_attr(old, SPACE_ATTR, space_document(loaded.spec))
    write_attr(old, "hpsearch:ready", True)
    old.enqueue_trial({"x": 1.0, "log2_batch_size": 6, "batch_size": 64})
    trial = old.ask({"x": optuna.distributions.FloatDistribution(-5, 5),
                     "log2_batch_size": IntDistribution(4, 7),
                     "batch_size": IntDistribution(64, 64)})  # fmt: skip
    old.tell(trial, 1.0)
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    study = optuna.load_study(study_name=loaded.spec.name, storage=url)
    assert len(study.trials) > 1  # the old trial and the new ones
    for t in study.trials:
        assert t.params["batch_size"] == 2 ** t.params["log2_batch_size"]
    for command in ("best", "status", "advise"):
        assert main([command, str(path), "--storage", url]) == 0
    assert main(["report", str(path), "--storage", url, "-o", str(tmp_path / "r.html")]) == 0


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
    assert read_attr(study, ENCODING_ATTR) == "value-only"


def _spec(sampler: str, *, x: str = X) -> hpsearch.spec.StudySpec:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(
            "name: s\nmetric: loss\ndirection: minimize\nobjective: {function: o.py:f}\n"
            + SPACE.format(sampler=sampler, x=x)
        )
        return load_spec(path).spec
