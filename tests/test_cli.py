"""The command line as a user meets it: exit codes, one-line errors, validate's report."""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from hpsearch.cli import main
from hpsearch.study import BUDGET_CHANGES_ATTR, read_attr

ROOT = Path(__file__).resolve().parent.parent


def test_run_then_rerun_joins_and_extends(
    quadratic_study: Callable[..., Path], unique_name: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = quadratic_study(n_trials=4)
    assert main(["run", str(path), "--storage", url]) == 0
    assert "[4/4] trial 3 COMPLETE" in capsys.readouterr().err
    study = optuna.load_study(study_name=unique_name, storage=url)
    assert len(study.trials) == 4
    assert main(["run", str(path), "--storage", url, "--n-trials", "6", "-q"]) == 0
    assert len(study.trials) == 6  # the budget is study-wide: 2 more, not 6 more


def test_joining_with_another_search_space_is_refused_with_a_diff(
    quadratic_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = quadratic_study(n_trials=1)
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    path.write_text(path.read_text().replace("high: 5", "high: 6"))
    assert main(["run", str(path), "--storage", url, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "this file differs from study" in err
    assert "search_space.x.high (study 5.0, this file 6.0)" in err


def test_a_joiner_cannot_silently_change_the_study(
    quadratic_study: Callable[..., Path], unique_name: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A second machine's copy of the file joined with another budget, sampler or objective
    option without a word, and rewrote the shared budget (`status`: 22/10)."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = quadratic_study(n_trials=2)
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    original = path.read_text()
    for edit, key in [
        (original.replace("n_trials: 2", "n_trials: 3"), "budget.n_trials (study 2, this file 3)"),
        (original.replace("type: random, seed: 1", "type: tpe, seed: 1"), "sampler.type"),
        (original.replace("sleep: 0.0", "sleep: 0.01"), "objective.sleep"),
        (original.replace("n_trials: 2", "n_trials: 3").replace("seed: 1", "seed: 2"),
         "budget.n_trials (study 2, this file 3); sampler.seed (study 1, this file 2)"),
    ]:  # fmt: skip
        path.write_text(edit)
        assert main(["run", str(path), "--storage", url, "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0
        assert key in err, err
    assert len(optuna.load_study(study_name=unique_name, storage=url).trials) == 2
    # The budget alone may change, when asked: logged and recorded on the study.
    path.write_text(original.replace("n_trials: 2", "n_trials: 3"))
    assert main(["run", str(path), "--storage", url, "--change-budget"]) == 0
    assert "budget changed from" in capsys.readouterr().err
    study = optuna.load_study(study_name=unique_name, storage=url)
    assert len(study.trials) == 3
    (change,) = read_attr(study, BUDGET_CHANGES_ATTR)
    assert (change["from"]["n_trials"], change["to"]["n_trials"]) == (2, 3)
    assert main(["run", str(path), "--storage", url, "-q"]) == 0  # the file matches again


def test_validate_prints_the_resolved_study(
    quadratic_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = quadratic_study(extra="enqueue: [{x: 1.0}]")
    assert main(["validate", str(path), "--storage", "postgresql://me@db/hp"]) == 0
    out = capsys.readouterr().out
    assert "storage:    postgresql+psycopg://me@db/hp (from --storage)" in out
    assert "x: float low=-5.0 high=5.0" in out
    assert "enqueued:   1 trial(s)" in out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("objective.py:quadratic", "objective.py:nope"),
         "objective.function: 'objective.py' has no function 'nope'"),
        (("objective.py:quadratic", "missing.py:f"), "objective.function: no file "),
        (("objective.py:quadratic", "no_such_module:f"),
         "objective.function: cannot import 'no_such_module': No module named"),
    ],
)  # fmt: skip
def test_objective_that_cannot_be_imported(
    quadratic_study: Callable[..., Path], capsys: pytest.CaptureFixture[str],
    edit: tuple[str, str], message: str,
) -> None:  # fmt: skip
    path = quadratic_study()
    path.write_text(path.read_text().replace(*edit))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hpsearch: error: {path}:")
    assert message in err
    assert err.count("\n") == 1


def test_errors_never_show_a_traceback_unless_debug(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nobjective: {function: a.py:f}\nsearch_space: {lr: {type: float}}\n")
    run = subprocess.run(
        [sys.executable, "-m", "hpsearch", "validate", str(bad)], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert run.stderr == f"hpsearch: error: {bad}:3: search_space.lr.low: this key is required " \
        "but missing (and 1 more problem)\n"  # fmt: skip
    debug = subprocess.run(
        [sys.executable, "-m", "hpsearch", "validate", str(bad), "--debug"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "Traceback" in debug.stderr


def test_schema_is_json_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hpsearch", "schema"], capture_output=True, text=True, check=True
    )
    assert '"title": "hpsearch study file"' in out.stdout
    assert '"search_space"' in out.stdout


def test_a_sampler_whose_package_is_missing_is_refused_before_any_trial(
    quadratic_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sampler: {type: cmaes}` validated, then every trial failed on `No module named`."""
    path = quadratic_study(n_trials=3)
    path.write_text(path.read_text().replace("type: random, seed: 1", "type: cmaes, seed: 1"))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    if importlib.util.find_spec("cmaes") is not None:  # pragma: no cover - not a dependency
        assert main(["validate", str(path), "--storage", url]) == 0
        return
    for command in ("validate", "run"):
        assert main([command, str(path), "--storage", url, "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(
            "sampler.type: the cmaes sampler needs the Python package 'cmaes', which is not "
            "installed here; `pip install cmaes`, or pick another sampler"
        )
    assert not (tmp_path / "db.sqlite").exists() or not optuna.get_all_study_names(url)


def test_a_study_that_cannot_succeed_stops_and_says_why(
    write_study: Callable[..., Path], unique_name: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A command that prints nothing failed all 12 trials and the run exited 0."""
    path = write_study(f"""
        name: {unique_name}
        metric: loss
        budget: {{n_trials: 12, max_failures: 3}}
        objective: {{command: "{sys.executable} -c pass"}}
        search_space: {{x: {{type: float, low: 0, high: 1}}}}
    """)  # fmt: skip
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "hpsearch: error: stopped after 3 failed trials in a row (budget.max_failures: 3); "
        "commonest reason (3x): RuntimeError: command printed no `hpsearch-result name=value` "
        "or `hpsearch-report` line; fix it and run again"
    )
    assert len(optuna.load_study(study_name=unique_name, storage=url).trials) == 3


def test_a_grid_study_without_n_trials_ends_with_its_grid(
    write_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    """A 3-point grid with no `n_trials` ran 1,200 trials: the grid never said it was done."""
    path = write_study(f"""
        name: {unique_name}
        metric: loss
        sampler: {{type: grid}}
        pruner: {{type: none}}
        objective: {{function: objective.py:quadratic}}
        search_space: {{x: {{type: categorical, choices: [1.0, 2.0, 3.0]}}}}
    """)  # fmt: skip
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    trials = optuna.load_study(study_name=unique_name, storage=url).trials
    assert sorted(t.params["x"] for t in trials) == [1.0, 2.0, 3.0]


def test_a_study_without_a_budget_is_told_it_runs_until_stopped(
    quadratic_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = quadratic_study()
    path.write_text(path.read_text().replace("budget: {n_trials: 6}\n", ""))
    assert main(["validate", str(path)]) == 0
    assert "budget: none set, so the study runs until it is stopped" in capsys.readouterr().err
    assert main(["validate", str(ROOT / "studies" / "quickstart.yaml")]) == 0
    assert "warning" not in capsys.readouterr().err.lower()


@pytest.mark.parametrize(("sampler", "warned"), [("gp", True), ("cmaes", True), ("tpe", False)])
def test_a_sampler_that_would_draw_conditional_parameters_at_random_says_so(
    write_study: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sampler: str,
    warned: bool,
) -> None:
    # GP, CMA-ES and QMC model only the parameters every trial has; Optuna's own warning is
    # off (it would repeat every trial), so hpsearch says it once, in validate and run.
    path = write_study(f"""
        name: conditional-{sampler}
        metric: loss
        sampler: {{type: {sampler}}}
        budget: {{n_trials: 2}}
        objective: {{function: objective.py:quadratic}}
        search_space:
          x: {{type: float, low: -5, high: 5}}
          opt: {{type: categorical, choices: [a, b]}}
          m: {{type: float, low: 0, high: 1, when: {{opt: a}}}}
    """)  # fmt: skip
    message = f"sampler.type: {sampler} models only the parameters every trial has, so m "
    assert main(["validate", str(path)]) == 0
    assert (message in capsys.readouterr().err) is warned
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url]) == 0
    assert capsys.readouterr().err.count(message) == int(warned)


@pytest.mark.slow  # a study, then four hpsearch processes
def test_output_into_a_closed_pipe_and_to_standard_output(
    quadratic_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    """`status --json | head -1` printed a BrokenPipe traceback; `export -o -` wrote a file
    named `-`."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = quadratic_study(n_trials=3)
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    hpsearch = f"{sys.executable} -m hpsearch"
    for command in (f"status --json {path} --storage {url}", f"doctor {path} --storage {url}"):
        piped = subprocess.run(
            f"{hpsearch} {command} | head -c 1", shell=True, capture_output=True, text=True,
            cwd=tmp_path,
        )  # fmt: skip
        assert "Traceback" not in piped.stderr, piped.stderr
        assert "BrokenPipe" not in piped.stderr, piped.stderr
    exported = subprocess.run(
        [*hpsearch.split(), "export", str(path), "--storage", url, "-o", "-", "-q"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 3
    assert not (tmp_path / "-").exists()


def test_a_worker_imports_only_the_command_it_runs() -> None:
    """Every worker starts with `hpsearch run`: importing `best`, `dashboard` or `advise` (and
    boto3 and plotly with them) cost it about half a second of start-up, per process."""
    from hpsearch.commands import NAMES, command

    assert [command(name).NAME for name in NAMES] == list(NAMES)
    code = (
        "import sys; from hpsearch.cli import build_parser; build_parser('run'); "
        "print(sorted(m for m in sys.modules if m.startswith('hpsearch.commands.'))); "
        "print(sorted({'boto3', 'plotly', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert (
        out[0]
        == "['hpsearch.commands.common', 'hpsearch.commands.progress', 'hpsearch.commands.run']"
    )
    assert out[1] == "[]"


def test_a_failing_run_prints_our_lines_only_and_its_exit_reason(
    write_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    """Optuna's `[W ...] Trial 0 failed with parameters: {...}` and `Trial 0 failed with value
    None.` repeated each FAIL line, and the worker's exit line said `(stopped)` for
    max_failures."""
    path = write_study(f"""
        name: {unique_name}
        metric: loss
        direction: minimize
        budget: {{n_trials: 12, max_failures: 3}}
        objective: {{function: objective.py:fails}}
        search_space: {{batch_size: {{type: power_of_two, low: 8, high: 64}}}}
    """)  # fmt: skip
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    argv = [sys.executable, "-m", "hpsearch", "run", str(path), "--storage", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert not [line for line in lines if line.startswith("[") or "Trial" in line], lines
    fails = [line.split(" INFO ", 1)[1] for line in lines if " FAIL " in line]
    assert [line.split(" | ")[0] for line in fails] == [
        f"[{n + 1}/12] trial {n} FAIL (ValueError: boom)" for n in range(3)
    ]
    exit_line = next(line for line in lines if " done: " in line)
    assert exit_line.endswith("done: 3 fail (budget.max_failures: 3 failed trials in a row)")


def test_optuna_warnings_come_out_as_ours_with_readable_names(
    quadratic_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A sampler's warning names the exponent it searches (`log2_batch_size`) and `Trial#3`."""
    assert main(["validate", str(quadratic_study())]) == 0  # configures the logging
    capsys.readouterr()
    logging.getLogger("optuna.samplers._tpe.sampler").warning(
        "The parameter `log2_batch_size` in Trial#3 is sampled independently"
    )
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].endswith(
        " WARNING The parameter `batch_size` in trial 3 is sampled independently"
    )
