"""Every sampler and pruner the study file accepts builds and runs real trials.

The types come from the spec's own unions, so a new `type` literal is covered the day it is
added: a kind the spec accepts but the registry cannot build, or one whose trials fail on the
values a worker reports, fails here rather than in a user's study.
"""

from __future__ import annotations

import importlib.util
import json
import re
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

import hpsearch
from hpsearch.errors import SpecError
from hpsearch.spec import algorithms, load_spec
from hpsearch.study.algorithms import check_requirements


def _flatten(union: Any) -> list[Any]:
    """The models of a (possibly nested) Union, in order."""
    out = []
    for arg in typing.get_args(union):
        out.extend(_flatten(arg) if typing.get_origin(arg) is typing.Union else [arg])
    return out


def _kinds(annotated: Any) -> list[str]:
    models = _flatten(typing.get_args(annotated)[0])
    return [typing.get_args(m.model_fields["type"].annotation)[0] for m in models]


SAMPLERS = _kinds(algorithms.SamplerSpec)
PRUNERS = _kinds(algorithms.PrunerSpec)
# Options a kind cannot go without (no default); every other option keeps its default.
REQUIRED: dict[str, dict[str, Any]] = {
    "percentile": {"percentile": 50},
    "threshold": {"upper": 1000},
    "patient": {"patience": 1},
}
STEPS = 4


def test_the_kinds_are_read_from_the_spec() -> None:
    assert {"auto", "tpe", "qmc", "grid"} <= set(SAMPLERS)
    assert {"auto", "none", "successive_halving", "wilcoxon", "patient"} <= set(PRUNERS)


def _objective(params: dict[str, Any], report: Callable[..., None]) -> float:
    """A quadratic with one report per step, as a training's validation loss would come."""
    loss = (params["x"] - 1) ** 2 + (0.5 if params["c"] == "b" else 0.0)
    for step in range(STEPS):
        report({"loss": loss + 1 / (step + 1)}, step)
    return float(loss)


def _study(write_study: Callable[..., Path], name: str, sampler: str, pruner: str) -> Path:
    sampler_spec = {"type": sampler, **REQUIRED.get(sampler, {})}
    pruner_spec = {"type": pruner, **REQUIRED.get(pruner, {})}
    return write_study(f"""
        name: {name}
        metric: loss
        direction: minimize
        sampler: {json.dumps(sampler_spec)}
        pruner: {json.dumps(pruner_spec)}
        budget: {{n_trials: 3}}
        objective: {{function: objective.py:quadratic}}
        search_space:
          x: {{type: int, low: -4, high: 4}}
          c: {{type: categorical, choices: [a, b]}}
    """)  # fmt: skip


def _runs_three_trials(path: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = hpsearch.run(path, _objective, storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    # A chosen kind's "experimental" label is nothing the user can act on: not on every start.
    assert not [w for w in caught if issubclass(w.category, ExperimentalWarning)]
    states = [t.state for t in study.trials]
    assert len(states) == 3, states
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}, [
        (t.state.name, t.user_attrs.get("fail_reason")) for t in study.trials
    ]
    assert study.trials[0].state == TrialState.COMPLETE
    assert len(study.trials[0].intermediate_values) == STEPS


def _runs_or_names_its_missing_package(path: Path, key: str, tmp_path: Path) -> None:
    """Runs three trials; or, where this machine lacks the kind's optional package (cmaes), is
    refused up front in one line that names the key and the package to install."""
    try:
        check_requirements(load_spec(path))
    except SpecError as error:
        message = str(error)
        package = re.search(r"needs the Python package '([\w-]+)'", message)
        assert package, message
        assert importlib.util.find_spec(package.group(1)) is None, message
        assert "\n" not in message
        assert f"{key}.type" in message
        assert f"pip install {package.group(1)}" in message
        return
    _runs_three_trials(path, tmp_path)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_builds_and_runs_trials(
    sampler: str, write_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    path = _study(write_study, unique_name, sampler, "none")
    _runs_or_names_its_missing_package(path, "sampler", tmp_path)


@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_builds_and_runs_trials(
    pruner: str, write_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    path = _study(write_study, unique_name, "random", pruner)
    _runs_or_names_its_missing_package(path, "pruner", tmp_path)
