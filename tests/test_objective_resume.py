"""The user's own code resumes a handed-back trial: a function gets `trial.checkpoint_dir` and
`trial.resume_epoch`, a command `HPSEARCH_CHECKPOINT_DIR` and `HPSEARCH_RESUME_EPOCH`.

Real workers in this process (`hpsearch run`), a real SQLite study and a real shared artifact
folder. The objective stops its own worker with SIGTERM after saving epoch 3, as a preemption
would; the next run, on "another machine" (another artifacts folder), finds the file it saved
and goes on after it, and the study holds one curve of five steps.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState

from hpsearch.cli import main
from hpsearch.objective.function import takes_trial
from hpsearch.objective.resume import sweep
from hpsearch.storage import RETRY_ATTR

RESUMABLE = '''
import json, os, signal, time
from pathlib import Path

def epochs(folder, resume_epoch, log, report, *, stop_self):
    """Five epochs, each saved, then reported; the first try is preempted after epoch 3."""
    saved = Path(folder) / "state.json"
    start = json.loads(saved.read_text())["epoch"] + 1 if saved.exists() else 1
    with open(log, "a") as f:
        f.write(json.dumps({"start": start, "resume_epoch": resume_epoch}) + "\\n")
    for epoch in range(start, 6):
        tmp = saved.with_suffix(".tmp")
        tmp.write_text(json.dumps({"epoch": epoch}))
        tmp.replace(saved)
        report({"loss": 1.0 / epoch}, epoch)
        if epoch == 3 and start == 1:
            if stop_self:
                os.kill(os.getpid(), signal.SIGTERM)  # the worker hands the trial back
            time.sleep(120)  # a command waits for the test to stop its worker
    return {"loss": 0.2}

def train(params, report, trial):
    return epochs(trial.checkpoint_dir, trial.resume_epoch, params["log"], report, stop_self=True)

if __name__ == "__main__":
    import sys
    def report(metrics, step):
        print(f"hpsearch-report step={step} loss={metrics['loss']}", flush=True)
    epochs(os.environ["HPSEARCH_CHECKPOINT_DIR"], int(os.environ["HPSEARCH_RESUME_EPOCH"]),
           sys.argv[1], report, stop_self=False)
    print("hpsearch-result loss=0.2")
'''


def _first_try(kind: str, path: Path, url: str, name: str, artifacts: str) -> None:
    """Machine A runs the trial until it is preempted after epoch 3."""
    argv = ["run", str(path), "--storage", url, "--artifacts", artifacts, "-q"]
    if kind == "function":  # it sends its own worker SIGTERM
        assert main(argv) == 0
        return
    worker = subprocess.Popen([sys.executable, "-m", "hpsearch", *argv], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 120  # a hang guard: the step is awaited, not a duration
    while time.monotonic() < deadline:
        try:
            trials = optuna.load_study(study_name=name, storage=url).trials
        except KeyError:  # not created yet
            trials = []
        if trials and 3 in trials[0].intermediate_values:
            break
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out


@pytest.mark.parametrize("kind", ["function", "command"])
def test_user_code_resumes_after_the_epoch_it_saved_on_another_machine(
    kind: str, tmp_path: Path, unique_name: str, write_study: Callable[..., Path]
) -> None:
    (tmp_path / "resumable.py").write_text(RESUMABLE)
    log = tmp_path / "log.jsonl"
    objective = (
        f"{{function: resumable.py:train, log: {log}}}"
        if kind == "function"
        else f'{{command: "{sys.executable} resumable.py {log}"}}'
    )
    path = write_study(f"""
        name: {unique_name}
        metric: loss
        sampler: {{type: random, seed: 0}}
        pruner: {{type: none}}
        budget: {{n_trials: 1, epochs: 10}}
        artifact_store: {{type: filesystem, path: {tmp_path / "shared"}}}
        objective: {objective}
        search_space: {{x: {{type: float, low: 0, high: 1}}}}
    """)  # fmt: skip
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _first_try(kind, path, url, unique_name, str(tmp_path / "machine-a"))
    artifacts = str(tmp_path / "machine-b")
    assert main(["run", str(path), "--storage", url, "--artifacts", artifacts, "-q"]) == 0
    study = optuna.load_study(study_name=unique_name, storage=url)
    first, retry = study.trials
    assert first.state == TrialState.FAIL
    assert first.user_attrs["fail_reason"] == "worker stopped by SIGTERM"
    assert retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0
    # One curve: steps 1-3 from the first try (copied into the retry), 4-5 from the retry.
    assert sorted(retry.intermediate_values) == [1, 2, 3, 4, 5]
    assert retry.intermediate_values[3] == first.intermediate_values[3]
    starts = [json.loads(line) for line in log.read_text().splitlines()]
    assert starts == [{"start": 1, "resume_epoch": 0}, {"start": 4, "resume_epoch": 3}]
    # Space: a finished trial's folder and its uploads are gone.
    assert not list((tmp_path / "machine-b").rglob("state.json"))
    assert not [p for p in (tmp_path / "shared").iterdir()]


def test_a_two_argument_function_is_called_as_before() -> None:
    def old(params: dict[str, float], report: Callable[..., None]) -> float:
        return 0.0

    def new(params: dict[str, float], report: Callable[..., None], trial: object) -> float:
        return 0.0

    assert not takes_trial(old)
    assert takes_trial(new)
    assert not takes_trial(lambda *args: 0)  # a wrapper may pass on to a two-argument one
    assert not takes_trial(max)  # a builtin without a signature: the documented two


def test_a_machine_sweeps_the_resume_folders_of_trials_that_ended_for_good(
    tmp_path: Path,
) -> None:
    """What a killed worker left on its machine goes once its retry finished elsewhere; what a
    trial waiting for its retry (or running, or queued) may still need stays."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    dist: dict[str, BaseDistribution] = {"x": FloatDistribution(0, 1)}

    def add(state: TrialState, **system: object) -> None:
        value = 1.0 if state == TrialState.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, params={"x": 0.5}, distributions=dist, system_attrs=system,
        ))  # fmt: skip

    add(TrialState.FAIL, **{RETRY_ATTR: "crash"})  # 0: killed, retried by 1
    add(TrialState.COMPLETE, failed_trial=0, retry_history=[0])  # 1: its retry, done
    add(TrialState.FAIL, **{RETRY_ATTR: "stop"})  # 2: handed back, its retry not queued yet
    add(TrialState.WAITING)  # 3: queued
    add(TrialState.PRUNED)  # 4
    base = tmp_path / "resume"
    for number in (0, 2, 3, 4, 9):  # 9: no such trial here (left alone)
        (base / f"trial-{number:05d}").mkdir(parents=True)
    sweep(base, study)
    assert sorted(p.name for p in base.iterdir()) == ["trial-00002", "trial-00003", "trial-00009"]
