"""The three kinds of objective, reporting through one path: values, pruning, failures."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.cli import main
from hpsearch.errors import ObjectiveError
from hpsearch.objective import render

PROGRAM = r"""
import os, sys, time
lr = float(sys.argv[1])
assert os.environ["HPSEARCH_PARAM_LR"] == sys.argv[1]
for step in range(1, 6):
    acc = 1 - abs(lr - 0.3) - 0.1 / step
    print(f"hpsearch-report step={step} acc={acc:.4f}", flush=True)
    if os.environ.get("SLOW") and step >= 2:
        marker = os.environ["SLOW"] + "." + os.environ["HPSEARCH_TRIAL_NUMBER"]
        open(marker, "w").write(str(os.getpid()))
        time.sleep(600)
if lr > 0.95:
    print("diverged", flush=True)
    sys.exit(3)
print(f"hpsearch-result acc={1 - abs(lr - 0.3):.4f}")
"""


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def test_command_objective_reports_results_and_failures(
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
        enqueue: [{{lr: 0.3}}, {{lr: 0.99}}]
        budget: {{n_trials: 2}}
    """)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    good, bad = sorted(_study(url, unique_name).trials, key=lambda t: t.number)
    assert good.state == TrialState.COMPLETE
    assert good.value == pytest.approx(1.0)
    assert good.intermediate_values[5] == pytest.approx(0.98)
    assert bad.state == TrialState.FAIL
    assert bad.user_attrs["fail_reason"] == "RuntimeError: command exited with 3: diverged"


def test_pruned_command_trial_has_its_process_stopped(
    write_study: Callable[..., Path], tmp_path: Path, unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    (tmp_path / "train.py").write_text(PROGRAM)
    marker = tmp_path / "slow"
    monkeypatch.setenv("SLOW", str(marker))
    path = write_study(f"""
        name: {unique_name}
        metric: acc
        direction: maximize
        pruner: {{type: threshold, lower: 0.5}}
        objective: {{command: "{sys.executable} train.py {{lr}}"}}
        search_space: {{lr: {{type: float, low: 0.0, high: 1.0}}}}
        enqueue: [{{lr: 0.9}}]
        budget: {{n_trials: 1}}
    """)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    # Waiting for the program's 10-minute sleep would outlast the test's timeout.
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    (trial,) = _study(url, unique_name).trials
    assert trial.state == TrialState.PRUNED
    assert trial.last_step == 1
    assert not marker.with_suffix(".0").exists() or not _alive(
        int(marker.with_suffix(".0").read_text())
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_function_objective_prunes_fails_and_multi_objective(
    write_study: Callable[..., Path], tmp_path: Path, unique_name: str
) -> None:
    (tmp_path / "objective2.py").write_text(
        textwrap.dedent("""
        def two(params, report):
            report(params["x"], 1)
            return {"a": params["x"], "b": -params["x"]}

        def nan(params, report):
            return float("nan")
    """)
    )
    path = write_study(f"""
        name: {unique_name}
        metric: [a, b]
        directions: [maximize, maximize]
        sampler: {{type: nsga2, seed: 0, population_size: 4}}
        objective: {{function: objective2.py:two}}
        search_space: {{x: {{type: float, low: 0, high: 1}}}}
        budget: {{n_trials: 5}}
    """)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    trials = _study(url, unique_name).trials
    assert all(t.state == TrialState.COMPLETE and t.values == [t.params["x"], -t.params["x"]]
               for t in trials)  # fmt: skip
    assert "a@1" in trials[0].user_attrs  # multi-objective curves are kept, not pruned

    nan_path = write_study(f"""
        name: {unique_name}-nan
        objective: {{function: objective2.py:nan}}
        search_space: {{x: {{type: float, low: 0, high: 1}}}}
        budget: {{n_trials: 1}}
    """, "nan.yaml")  # fmt: skip
    assert main(["run", str(nan_path), "--storage", url, "-q"]) == 1  # no trial completed
    (failed,) = _study(url, f"{unique_name}-nan").trials
    assert failed.state == TrialState.FAIL
    assert (
        failed.user_attrs["fail_reason"] == "ObjectiveError: value is NaN; the training diverged"
    )


def test_function_objective_prunes_with_median(
    quadratic_study: Callable[..., Path], tmp_path: Path, unique_name: str
) -> None:
    path = quadratic_study(n_trials=20)
    path.write_text(
        path.read_text().replace("{type: none}", "{type: median, n_startup_trials: 3}")
    )
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    trials = _study(url, unique_name).trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned
    assert all("prune_reason" in t.user_attrs for t in pruned)
    assert len(trials) == 20


@pytest.mark.parametrize(
    "template",
    ["sh -c 'echo {x}'", 'bash -lc "train --x {x}"', "env python3 -c 'print({x})'",
     "/usr/bin/perl -e 'print {x}'"],
)  # fmt: skip
def test_a_placeholder_in_code_a_shell_runs_is_refused_with_the_fix(template: str) -> None:
    with pytest.raises(ObjectiveError, match=r"read it from the environment instead"):
        render(template, {"x": "$(touch pwned)"})


def test_values_stay_one_argument_and_never_run(
    write_study: Callable[..., Path], tmp_path: Path, unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A red team's `sh -c '... {x}'` ran `$(touch${IFS}pwned)`; now values are substituted
    into words after splitting, and the trial program does not inherit the database secrets."""
    payload = "$(touch${IFS}pwned); touch pwned2 --and more"
    assert render("prog --x {x} {y}", {"x": payload, "y": 2}) == ["prog", "--x", payload, "2"]
    assert render("sh -c 'echo ${{HOME}}' {x}", {"x": 1}) == ["sh", "-c", "echo ${HOME}", "1"]
    (tmp_path / "check.py").write_text(
        "import os, sys\n"
        "assert len(sys.argv) == 2, sys.argv\n"
        "assert not {'HPSEARCH_DB_PASSWORD', 'HPSEARCH_STORAGE'} & set(os.environ)\n"
        "print('hpsearch-result value=1')\n"
    )
    path = write_study(f"""
        name: {unique_name}
        metric: value
        objective: {{command: "{sys.executable} check.py {{x}}"}}
        search_space: {{x: {{type: categorical, choices: ["{payload}"]}}}}
        budget: {{n_trials: 1}}
    """)  # fmt: skip
    monkeypatch.setenv("HPSEARCH_DB_PASSWORD", "not-for-the-trial")
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    (trial,) = _study(url, unique_name).trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    assert not list(tmp_path.glob("pwned*"))


def test_a_shell_variable_in_a_command_says_how_to_escape_it(
    write_study: Callable[..., Path], unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(f"""
        name: {unique_name}
        objective: {{command: "sh -c 'cd ${{HOME}} && train $HPSEARCH_PARAM_X'"}}
        search_space: {{x: {{type: float, low: 0, high: 1}}}}
    """)  # fmt: skip
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "{HOME} is neither a search_space parameter nor an objective option" in err
    assert "for the shell variable ${HOME} write ${{HOME}}" in err
