"""`hpsearch advise`: what mattered, ranges to widen, progress, failures, and the next study."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.cli import main
from hpsearch.spec import load_spec

OBJECTIVES = '''
import math

def lr_only(params, report):
    """Depends on lr alone, best at lr = 1: above the top of the searched range."""
    return -math.log10(params["lr"]) ** 2

def flaky(params, report):
    if params["x"] > 0.8:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if params["x"] < 0.15:
        raise KeyError("lr_scale")
    return params["x"]
'''


def _study(tmp_path: Path, name: str, function: str, space: str, n_trials: int) -> Path:
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nmetric: score\ndirection: maximize\n"
        "sampler: {type: tpe, seed: 0}\npruner: {type: none}\n"
        f"budget: {{n_trials: {n_trials}}}\nobjective: {{function: objectives.py:{function}}}\n"
        f"search_space:\n{space}"
    )
    return path


LR_SPACE = """\
  lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
  x: {type: float, low: 0.0, high: 1.0}
  batch_size: {type: power_of_two, low: 16, high: 128}
"""


@pytest.mark.slow  # a 30-trial study, then fANOVA
def test_advise_names_the_option_that_mattered_and_widens_the_bound_it_presses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path, "lr-demo", "lr_only", LR_SPACE, n_trials=30)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    capsys.readouterr()
    next_file = tmp_path / "next" / "lr-next.yaml"
    next_file.parent.mkdir()
    assert main(["advise", str(path), "--storage", url, "-o", str(next_file)]) == 0
    out = capsys.readouterr().out
    assert "study lr-demo: maximize score; 30 trials: 30 complete" in out
    assert "\n  lr mattered most: it explains " in out
    assert "  lr: the best trials sit at the high end of its range" in out
    assert "widen it, try high: 1.0" in out
    assert "barely mattered: x, batch_size" in out
    # The next study: lr's range widened upwards, the rest fixed at the best trial's values.
    spec = load_spec(next_file).spec
    assert spec.name == "lr-demo-next"
    assert spec.search_space["lr"].model_dump(exclude_none=True)["high"] == 1.0
    assert set(spec.search_space) == {"lr"}
    assert set(spec.objective.options) == {"x", "batch_size"}
    (best,) = spec.enqueue
    assert 0.09 < float(best["lr"]) <= 0.1
    # It runs as written, from its new folder (the objective's path was rebased).
    assert main(["run", str(next_file), "--storage", url, "--n-trials", "16", "-q"]) == 0
    trials = optuna.load_study(study_name="lr-demo-next", storage=url).trials
    assert max(t.params["lr"] for t in trials) > 0.1  # now it searches above the old bound
    assert main(["report", str(path), "--storage", url, "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Advice (hpsearch advise)" in page
    assert "lr mattered most" in page
    # One computation of importances: the chart ranks as the advice does (lr first).
    chart = page[page.index('<section id="importances">') :]
    found = re.search(r'"y":(\[[^\]]*\])', chart)
    assert found is not None
    bars = json.loads(found.group(1))  # drawn bottom-up
    assert bars[::-1][0] == "lr"
    assert set(bars) == {"lr", "x", "batch_size"}
    assert "mean of fANOVA and PED-ANOVA (as the advice)" in chart


def test_failed_trials_are_grouped_by_cause_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path, "flaky", "flaky", "  x: {type: float, low: 0.0, high: 1.0}\n", 20)
    # Failures are the point here: do not stop after five in a row (`budget.max_failures`).
    path.write_text(path.read_text().replace("{n_trials: 20}", "{n_trials: 20, max_failures: 20}"))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    capsys.readouterr()
    assert main(["advise", str(path), "--storage", url]) == 0
    out = capsys.readouterr().out
    trials = optuna.load_study(study_name="flaky", storage=url).trials
    oom = [t.number for t in trials if t.state == TrialState.FAIL and t.params["x"] > 0.8]
    code = [t.number for t in trials if t.state == TrialState.FAIL and t.params["x"] < 0.15]
    assert oom
    assert code
    shown = ", ".join(map(str, oom[:8]))
    assert f"  {len(oom)} out of memory (trial {shown}): RuntimeError: CUDA out of memory" in out
    assert "    fix: lower `batch_size.high` (or use `high: auto`)" in out
    assert f"  {len(code)} code (trial " in out
    assert (
        "    fix: an error in the objective's code: `hpsearch run -v` shows the traceback" in out
    )


def _history(tmp_path: Path, values: list[float]) -> tuple[Path, str]:
    """A study with these results, added straight to the storage as finished trials."""
    path = _study(
        tmp_path, "hist", "lr_only", "  lr: {type: float, low: 1.0e-4, high: 0.1, log: true}\n", 1
    )
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = optuna.create_study(study_name="hist", storage=url, direction="maximize")
    dist: dict[str, BaseDistribution] = {"lr": FloatDistribution(1e-4, 0.1, log=True)}
    for i, value in enumerate(values):
        lr = 10 ** (-4 + 3 * ((i * 0.37) % 1))
        study.add_trial(create_trial(params={"lr": lr}, distributions=dist, value=value))
    return path, url


@pytest.mark.parametrize(
    ("values", "said"),
    [([0.5 + 0.01 * i for i in range(20)], "still improving: the best value was reached at trial"),
     ([0.5, 0.9] + [0.8] * 18, "settled: no gain of 0.1% or more in the last 18 finished trials"),
     ([0.5, 0.6, 0.7], "too early to tell: 3 finished trial(s)")],
    ids=["improving", "settled", "early"],
)  # fmt: skip
def test_advise_says_whether_the_study_still_improves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], values: list[float], said: str
) -> None:
    path, url = _history(tmp_path, values)
    assert main(["advise", str(path), "--storage", url]) == 0
    assert f"progress\n  {said}" in capsys.readouterr().out


def test_pruning_savings_are_said_against_what_the_study_would_have_trained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, url = _history(tmp_path, [])
    study = optuna.load_study(study_name="hist", storage=url)
    for steps, state in ((10, TrialState.COMPLETE), (10, TrialState.COMPLETE),
                         (2, TrialState.PRUNED), (2, TrialState.PRUNED)):  # fmt: skip
        trial = study.ask({"lr": FloatDistribution(1e-4, 0.1, log=True)})
        for step in range(1, steps + 1):
            trial.report(0.1 * step, step)
        study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    assert main(["advise", str(path), "--storage", url]) == 0
    out = capsys.readouterr().out
    # Two trials stopped at step 2 of the 10 the others ran: 16 steps saved of 40.
    said = (
        "pruning saved 16 steps by stopping 2 trial(s) early: 40% of the 40 the finished "
        "trials would have trained unpruned"
    )
    assert said in out
    # `status` gives the same figure in the same words.
    assert main(["status", str(path), "--storage", url]) == 0
    assert said.removeprefix("pruning ") in " ".join(capsys.readouterr().out.split())
