"""The study file: what loads, and the exact one-line error for each kind of mistake."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch.errors import SpecError
from hpsearch.spec import PowerOfTwoParam, TpeSampler, load_spec, parse_duration

GOOD = """
name: quickstart
direction: maximize
metric: val_accuracy
sampler: {type: tpe, seed: 0}
pruner: {type: median, n_warmup_steps: 2}
budget: {n_trials: 40, timeout: 2h}
objective:
  function: objective.py:quadratic
  data_dir: /data
search_space:
  lr:         {type: float, low: 1e-5, high: 1.0e-1, log: true}
  epochs:     {type: int, low: 2, high: 30}
  dropout:    {type: float, low: 0.0, high: 0.5, step: 0.05}
  batch_size: {type: power_of_two, low: 8, high: 256}
  optimizer:  {type: categorical, choices: [sgd, adam]}
  momentum:   {type: float, low: 0.8, high: 0.99, when: {optimizer: sgd}}
enqueue:
  - {lr: 0.01, epochs: 10, batch_size: 32, optimizer: sgd, momentum: 0.9}
"""


def test_good_file_loads_into_typed_values(write_study: Callable[..., Path]) -> None:
    spec = load_spec(write_study(GOOD)).spec
    assert spec.search_space["lr"].low == 1e-5  # YAML 1.1 would have read "1e-5" as a string
    assert spec.budget.timeout == 7200
    assert spec.objective.options == {"data_dir": "/data"}  # type: ignore[union-attr]
    assert isinstance(spec.sampler, TpeSampler)
    assert spec.study_directions == ["maximize"]
    assert spec.has_conditions
    assert spec.ordered_parameters().index("optimizer") < spec.ordered_parameters().index(
        "momentum"
    )
    bs = spec.search_space["batch_size"]
    assert isinstance(bs, PowerOfTwoParam) and (bs.low_exponent, bs.high_exponent()) == (3, 8)


@pytest.mark.parametrize(
    ("text", "value"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), (15, 15)],
)
def test_durations(text: str | int, value: float) -> None:
    assert parse_duration(text) == value


# (replace this, with that) -> the exact message after "file:line: "
MISTAKES = [
    ("low: 1e-5", "low: 0.0", 11, "search_space.lr.low: log scale needs low > 0, but got 0.0"),
    ("n_trials", "n_trails", 6,
     "budget.n_trails: unknown key; did you mean `n_trials`? valid keys: n_trials, timeout, "
     "gpu_hours"),
    ("type: categorical", "type: categorial", 15,
     "search_space.optimizer.type: unknown type 'categorial'; did you mean `categorical`? "
     "valid: float, int, power_of_two, categorical"),
    ("[sgd, adam]", "[]", 15,
     "search_space.optimizer.choices: `choices` must list at least one value, but got []"),
    ("{optimizer: sgd}", "{optimzer: sgd}", 16,
     "search_space.momentum.when.optimzer: `when` names unknown parameter 'optimzer'; valid: "
     "lr, epochs, dropout, batch_size, optimizer, momentum"),
    ("momentum: 0.9}", "momentum: 0.5}", 18,
     "enqueue.0.momentum: 0.5 is outside the search space of 'momentum'"),
    ("batch_size: 32,", "batch_size: 24,", 18,
     "enqueue.0.batch_size: 24 is outside the search space of 'batch_size'"),
    ("high: 30", "high: 1", 12, "search_space.epochs.high: `high` must be > low (2), but got 1"),
    ("timeout: 2h", "timeout: 2x", 6,
     "budget.timeout: a duration such as 90s, 30m or 2h is needed, but got '2x'"),
    ("low: 8, high: 256", "low: 6, high: 256", 14,
     "search_space.batch_size.low: `low` must be a power of two such as 8, but got 6"),
    ("n_warmup_steps: 2", "n_warmup_steps: -1", 5,
     "pruner.n_warmup_steps: Input should be greater than or equal to 0, but got -1"),
    ("type: tpe", "type: tpee", 4,
     "sampler.type: unknown type 'tpee'; did you mean `tpe`? valid: tpe, gp, random, cmaes, "
     "qmc, grid, nsga2"),
    ("  function: objective.py:quadratic", "  functon: objective.py:quadratic", 7,
     "objective: needs exactly one of `function: file.py:name`, `command: ...` or "
     "`trainer: image_classification`"),
    ("epochs:     {type: int, low: 2, high: 30}", "epochs:     {type: int, low: 2.5, high: 30}",
     12, "search_space.epochs.low: Input should be a valid integer, got a number with a "
     "fractional part, but got 2.5"),
    ("direction: maximize", "direction: maximise", 2,
     "direction: Input should be 'maximize' or 'minimize', but got 'maximise'"),
    ("direction: maximize", "directions: [maximize, minimize]", 3,
     "metric: 2 direction(s) need as many metrics, but got 1; list one metric per direction"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "line", "message"), MISTAKES)
def test_mistakes_get_one_line_naming_file_line_and_key(
    write_study: Callable[..., Path], old: str, new: str, line: int, message: str
) -> None:
    assert old in GOOD
    path = write_study(GOOD.replace(old, new, 1))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}:{line}: {message}"


def test_password_in_storage_url_is_refused_without_echoing_it(
    write_study: Callable[..., Path],
) -> None:
    path = write_study(GOOD + "storage: postgresql+psycopg://me:s3cr3t@db/hp\n")
    with pytest.raises(SpecError, match=r"storage: a password must never be written") as info:
        load_spec(path)
    assert "s3cr3t" not in str(info.value)
    assert "HPSEARCH_DB_PASSWORD" in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope.yaml: no such study file; check the path"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsearch_space:\n  lr: {type: float, low: 1\n")
    with pytest.raises(SpecError, match=r"bad.yaml:4: YAML syntax error: expected ',' or '}'"):
        load_spec(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match=r"list.yaml:1: the study file must be a mapping"):
        load_spec(listed)


def test_duplicate_keys_are_errors(write_study: Callable[..., Path]) -> None:
    path = write_study(GOOD.replace("name: quickstart", "name: a\nname: b"))
    with pytest.raises(SpecError, match=r":2: name: duplicate key \(first on line 1\); keep one"):
        load_spec(path)


def test_cycle_in_conditions(write_study: Callable[..., Path]) -> None:
    text = GOOD.replace("{type: int, low: 2, high: 30}", "{type: int, low: 2, high: 30, when: "
                        "{momentum: 0.9}}").replace("enqueue:\n  - {lr: 0.01, epochs: 10, "
                        "batch_size: 32, optimizer: sgd, momentum: 0.9}\n", "")  # fmt: skip
    text = text.replace("{optimizer: sgd}", "{epochs: 3}")
    with pytest.raises(SpecError, match=r"search_space: `when` conditions form a cycle"):
        load_spec(write_study(text))


def test_spec_does_not_import_torch_or_optuna() -> None:
    code = "import sys, hpsearch.spec; print('torch' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
