"""The study file: what loads, and the exact one-line error for each kind of mistake."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch.errors import SpecError
from hpsearch.spec import (
    FloatParam,
    GpSampler,
    MedianPruner,
    PatientPruner,
    PowerOfTwoParam,
    TpeSampler,
    load_spec,
    parse_duration,
)

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
    lr = spec.search_space["lr"]
    assert isinstance(lr, FloatParam)
    assert lr.low == 1e-5
    assert spec.budget.timeout == 7200
    assert spec.objective.options == {"data_dir": "/data"}
    assert isinstance(spec.sampler, TpeSampler)
    assert spec.study_directions == ["maximize"]
    assert spec.has_conditions
    assert spec.ordered_parameters().index("optimizer") < spec.ordered_parameters().index(
        "momentum"
    )
    bs = spec.search_space["batch_size"]
    assert isinstance(bs, PowerOfTwoParam)
    assert (bs.low_exponent, bs.high_exponent()) == (3, 8)


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
     "gpu_hours, epochs, target, max_failures"),
    ("type: categorical", "type: categorial", 15,
     "search_space.optimizer.type: unknown type 'categorial'; did you mean `categorical`? "
     "valid: float, int, power_of_two, categorical"),
    ("[sgd, adam]", "[]", 15,
     "search_space.optimizer.choices: `choices` must list at least one value, but got []"),
    ("{optimizer: sgd}", "{optimzer: sgd}", 16,
     "search_space.momentum.when.optimzer: `when` names unknown parameter 'optimzer'; valid: "
     "lr, epochs, dropout, batch_size, optimizer, momentum"),
    ("momentum: 0.9}", "momentum: 0.5}", 18,
     "enqueue.0.momentum: 0.5 is outside the search space of 'momentum', which is a float in "
     "[0.8, 0.99]; enqueue a value inside it or widen the space"),
    ("batch_size: 32,", "batch_size: 24,", 18,
     "enqueue.0.batch_size: 24 is outside the search space of 'batch_size', which is a power "
     "of two in [8, 256]; enqueue a value inside it or widen the space"),
    ("high: 30", "high: 1", 12, "search_space.epochs.high: `high` must be > low (2), but got 1"),
    ("timeout: 2h", "timeout: 2x", 6,
     "budget.timeout: a duration such as 90s, 30m, 2h or 1h30m (or a number of seconds) is "
     "needed, but got '2x'"),
    ("timeout: 2h", "timeout: 2hours", 6,
     "budget.timeout: a duration such as 90s, 30m, 2h or 1h30m (or a number of seconds) is "
     "needed, but got '2hours'; write 2h"),
    ("low: 8, high: 256", "low: 6, high: 256", 14,
     "search_space.batch_size.low: `low` must be a power of two such as 8, but got 6"),
    ("n_warmup_steps: 2", "n_warmup_steps: -1", 5,
     "pruner.n_warmup_steps: must be >= 0, but got -1"),
    ("type: tpe", "type: tpee", 4,
     "sampler.type: unknown type 'tpee'; did you mean `tpe`? valid: auto, tpe, gp, random, cmaes, "
     "qmc, grid, nsga2"),
    ("  function: objective.py:quadratic", "  functon: objective.py:quadratic", 8,
     "objective.functon: unknown key; did you mean `function`? the objective needs exactly one "
     "of `function: file.py:name`, `command: ...` or `trainer: image_classification`"),
    ("epochs:     {type: int, low: 2, high: 30}", "epochs:     {type: int, low: 2.5, high: 30}",
     12, "search_space.epochs.low: must be an integer, but got 2.5; use a whole number"),
    ("direction: maximize", "direction: maximise", 2,
     "direction: must be maximize or minimize, but got 'maximise'; did you mean `maximize`?"),
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
    with pytest.raises(
        SpecError,
        match=r"bad.yaml:3: search_space.lr: YAML syntax error: the `{` opened here is not closed",
    ):
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
    with pytest.raises(
        SpecError,
        match=r":12: search_space.epochs.when: `when` conditions form a cycle: epochs -> momentum "
        r"-> epochs; remove one of these conditions",
    ):
        load_spec(write_study(text))


def test_spec_does_not_import_torch_or_optuna() -> None:
    code = "import sys, hpsearch.spec; print('torch' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_friendly_forms_are_accepted(write_study: Callable[..., Path]) -> None:
    text = (
        GOOD.replace("sampler: {type: tpe, seed: 0}", "sampler: {type: gp}")
        .replace("pruner: {type: median, n_warmup_steps: 2}", "pruner: {type: patient, "
                 "patience: 2, wrapped: {type: median}}")
        .replace("n_trials: 40", "n_trials: 4e1")
        .replace("name: quickstart", "name: 2024-01-01")
    )  # fmt: skip
    spec = load_spec(write_study("\ufeff" + text)).spec  # a byte-order mark, as Windows writes
    assert isinstance(spec.sampler, GpSampler)
    assert isinstance(spec.pruner, PatientPruner)
    assert isinstance(spec.pruner.wrapped, MedianPruner)
    assert spec.budget.n_trials == 40
    assert isinstance(spec.budget.n_trials, int)
    assert spec.name == "2024-01-01"  # dates stay text


def test_a_bare_sampler_or_pruner_name_says_how_to_write_it(
    write_study: Callable[..., Path],
) -> None:
    path = write_study(GOOD.replace("sampler: {type: tpe, seed: 0}", "sampler: tpe"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == (
        f"{path}:4: sampler: must be a mapping such as `{{type: tpe}}`, but got the bare name "
        "'tpe'; write `{type: tpe}`"
    )


def test_anchors_and_merge_keys_still_work(write_study: Callable[..., Path]) -> None:
    text = GOOD.replace(
        "  lr:         {type: float, low: 1e-5, high: 1.0e-1, log: true}",
        "  lr: &unit {type: float, low: 1e-5, high: 1.0e-1, log: true}\n"
        "  wd:\n    <<: *unit\n    high: 1.0e-2",
    )
    spec = load_spec(write_study(text)).spec
    wd = spec.search_space["wd"]
    assert isinstance(wd, FloatParam)
    assert wd.high == 0.01
    assert wd.log


def test_random_edits_never_escape_as_anything_but_one_located_line(tmp_path: Path) -> None:
    """A small fuzz: whatever the edit, load_spec returns or raises one `file:line:` line."""
    rng = random.Random(0)
    pieces = [":", "{", "}", "[", "]", ",", "- ", "&a ", "*a", "<<: ", "\t", "\n", "'", '"', "#",
              "?", "!", "~", "null", "true", ".inf", "1e400", "-1", "type: ", "é"]  # fmt: skip
    path = tmp_path / "study.yaml"
    for _ in range(300):
        text = GOOD
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            if rng.random() < 0.5:
                text = text[:at] + rng.choice(pieces) + text[at:]
            else:
                text = text[:at] + text[at + rng.randint(1, 6) :]
        path.write_text(text)
        try:
            load_spec(path)
            continue
        except SpecError as e:
            message = str(e)
        assert "\n" not in message
        assert re.match(rf"{re.escape(str(path))}:\d+: ", message), message
