"""deploy/slurm: the job-array script, checked without Slurm.

`bash -n`, its #SBATCH directives, the hpsearch command line it builds (against the CLI's
parser), and its stop path: the script is run as Slurm runs a batch script, and the signal its
`--signal` directive names is sent to it, as Slurm does ahead of the time limit; the running
trial must be handed back (failed and queued again) and the task must end cleanly.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "slurm" / "hpsearch-array.sbatch"


def _directives() -> dict[str, str]:
    found = {}
    for line in SCRIPT.read_text().splitlines():
        match = re.match(r"#SBATCH\s+--([\w-]+)(?:=(\S+))?", line)
        if match:
            found[match.group(1)] = match.group(2) or ""
    return found


def test_the_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert SCRIPT.read_text().startswith("#!/bin/bash\n")
    assert os.access(SCRIPT, os.X_OK)


def test_directives_stop_ahead_of_the_limit_and_requeue_preempted_tasks() -> None:
    directives = _directives()
    where, name, seconds = re.fullmatch(r"(B:)?(\w+)@(\d+)", directives["signal"]).groups()  # type: ignore[union-attr]
    assert where == "B:"  # to the batch script, which has become `hpsearch run` (exec)
    assert name == "TERM"
    assert int(seconds) >= 60  # the graceful stop must fit before the limit
    assert "requeue" in directives
    assert re.fullmatch(r"\d+-\d+", directives["array"])
    assert directives["gpus-per-task"] == "1"
    text = SCRIPT.read_text()
    assert "exec ${HPSEARCH:-hpsearch}" in text
    assert "PASSWORD=" not in re.sub(r"HPSEARCH_DB_PASSWORD=\$\(", "", text)  # none written


def _argv(tmp_path: Path, **env: str) -> list[str]:
    """The arguments the script hands to hpsearch, by running it with `echo` as hpsearch."""
    result = subprocess.run(
        ["bash", str(SCRIPT), "studies/quickstart.yaml"],
        env={"PATH": os.environ["PATH"], "HPSEARCH": "echo", "TMPDIR": str(tmp_path),
             "HPSEARCH_STORAGE": "postgresql+psycopg://hpsearch@db/hpsearch", **env},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return shlex.split(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(("gpus", "flag"), [("", None), ("all", "all")])
def test_the_command_line_is_one_the_cli_accepts(tmp_path: Path, gpus: str, flag: str) -> None:
    argv = _argv(tmp_path, HPSEARCH_GPUS=gpus, SLURM_ARRAY_JOB_ID="7", SLURM_ARRAY_TASK_ID="3")
    args = build_parser().parse_args(argv)
    assert args.command == "run"
    assert args.gpus == flag
    assert args.artifacts == str(tmp_path / "hpsearch-7-3")  # node-local scratch, per task
    assert args.storage is None  # from the environment, not the command line


def test_the_script_refuses_to_start_without_a_storage_url(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), "s.yaml"], env={"PATH": os.environ["PATH"], "HPSEARCH": "echo"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "set HPSEARCH_STORAGE" in result.stderr


@pytest.mark.slow
def test_the_configured_signal_hands_the_running_trial_back(
    postgres_url: str, quadratic_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    # A trial of 10 minutes: it is handed back on the signal, not run to its end.
    path = quadratic_study(n_trials=3, sleep=600, extra="workers: {heartbeat_interval: 1}")
    password_file = tmp_path / "db-password"
    password_file.write_text("")  # the test database takes none; read like a real one
    env = {
        **os.environ, "HPSEARCH_STORAGE": postgres_url, "TMPDIR": str(tmp_path),
        "HPSEARCH_DB_PASSWORD_FILE": str(password_file),
        "HPSEARCH": f"{sys.executable} -m hpsearch", "SLURM_JOB_ID": "42",
    }  # fmt: skip
    env.pop("HPSEARCH_DB_PASSWORD", None)
    task = subprocess.Popen(
        ["bash", str(SCRIPT), str(path)], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    running: list[optuna.trial.FrozenTrial] = []
    while not running and time.monotonic() < deadline and task.poll() is None:
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name=unique_name, storage=postgres_url).trials
        except KeyError:
            continue
        running = [t for t in trials if t.state == TrialState.RUNNING]
    assert running, task.communicate()[0] if task.poll() is not None else "no trial started"
    name = re.fullmatch(r"B:(\w+)@\d+", _directives()["signal"]).group(1)  # type: ignore[union-attr]
    task.send_signal(getattr(signal, f"SIG{name}"))  # what Slurm sends ahead of the limit
    out, _ = task.communicate(timeout=120)
    assert task.returncode == 0, out
    trials = optuna.load_study(study_name=unique_name, storage=postgres_url).trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.number for t in failed] == [running[0].number]
    assert failed[0].user_attrs["fail_reason"] == "worker stopped by SIGTERM"
    assert [t.params for t in waiting] == [failed[0].params]  # queued again for the next task
    assert "task 0 of job 42" in out
