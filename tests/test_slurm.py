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
SCRIPT = ROOT / "deploy" / "slurm" / "hpsearch-array.sbatch"  # one task per GPU
NODE_SCRIPT = ROOT / "deploy" / "slurm" / "hpsearch-node.sbatch"  # one task per node
SCRIPTS = [SCRIPT, NODE_SCRIPT]


def _directives(script: Path = SCRIPT) -> dict[str, str]:
    found = {}
    for line in script.read_text().splitlines():
        match = re.match(r"#SBATCH\s+--([\w-]+)(?:=(\S+))?", line)
        if match:
            found[match.group(1)] = match.group(2) or ""
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_script_is_valid_bash(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert script.read_text().startswith("#!/bin/bash\n")
    assert os.access(script, os.X_OK)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_directives_stop_ahead_of_the_limit_and_requeue_preempted_tasks(script: Path) -> None:
    directives = _directives(script)
    where, name, seconds = re.fullmatch(r"(B:)?(\w+)@(\d+)", directives["signal"]).groups()  # type: ignore[union-attr]
    assert where == "B:"  # to the batch script only, which passes it on to `hpsearch run` once
    assert name == "TERM"
    assert int(seconds) >= 60  # the graceful stop must fit before the limit
    assert "requeue" in directives
    assert re.fullmatch(r"\d+-\d+", directives["array"])
    # Current Slurm rejects --gpus-per-task without --ntasks: every task count is explicit.
    assert directives["ntasks"] == "1"
    text = script.read_text()
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text
    assert "PASSWORD=" not in re.sub(r"HPSEARCH_DB_PASSWORD=\$\(", "", text)  # none written


def test_one_task_per_gpu_asks_for_per_task_resources() -> None:
    directives = _directives(SCRIPT)
    assert directives["gpus-per-task"] == "1"
    assert int(directives["cpus-per-task"]) >= 1
    assert re.fullmatch(r"\d+G", directives["mem"])
    assert not {"exclusive", "gpus-per-node", "nodes"} & set(directives)


def test_one_task_per_node_asks_for_the_whole_node() -> None:
    """Not the per-task GPU, CPU and memory of the per-GPU script: a node, all of it."""
    directives = _directives(NODE_SCRIPT)
    assert directives["nodes"] == "1"
    assert "exclusive" in directives  # all the node's CPUs
    assert directives["mem"] == "0"  # all the node's memory
    assert int(directives["gpus-per-node"]) >= 1
    assert not {"gpus-per-task", "cpus-per-task", "gpus"} & set(directives)


def test_both_scripts_run_the_same_task() -> None:
    """The task's body is written twice (Slurm copies a batch script away from its folder, so
    one cannot source the other): the copies must not drift."""
    marker = "# --- the task"
    bodies = [s.read_text().split(marker, 1)[1] for s in SCRIPTS]
    assert bodies[0] == bodies[1]


def _argv(tmp_path: Path, script: Path = SCRIPT, **env: str) -> list[str]:
    """The arguments the script hands to hpsearch, by running it with `echo` as hpsearch."""
    result = subprocess.run(
        ["bash", str(script), "studies/quickstart.yaml"],
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


def test_the_node_script_runs_one_process_per_gpu_of_its_node(tmp_path: Path) -> None:
    args = build_parser().parse_args(_argv(tmp_path, NODE_SCRIPT, SLURM_ARRAY_TASK_ID="1"))
    assert args.gpus == "all"


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
    path = quadratic_study(n_trials=3, sleep=30, extra="workers: {heartbeat_interval: 1}")
    password_file = tmp_path / "db-password"
    password_file.write_text("")  # the test database takes none; read like a real one
    # Slurm cannot run here: a stand-in `scontrol` records how the script asks for the requeue.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.calls"}\n')
    scontrol.chmod(0o755)
    env = {
        **os.environ, "HPSEARCH_STORAGE": postgres_url, "TMPDIR": str(tmp_path),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
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
    out, _ = task.communicate(timeout=60)
    assert task.returncode == 0, out
    trials = optuna.load_study(study_name=unique_name, storage=postgres_url).trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.number for t in failed] == [running[0].number]
    assert failed[0].user_attrs["fail_reason"] == "worker stopped by SIGTERM"
    assert [t.params for t in waiting] == [failed[0].params]  # queued again for the next task
    assert "task 0 of job 42" in out
    # The task puts itself back in the queue, to join the study again when next scheduled.
    assert (tmp_path / "scontrol.calls").read_text() == "requeue 42\n"


@pytest.mark.parametrize(("signalled", "requeue", "calls"), [
    (False, "1", ""),  # the budget is spent: the task ends for good
    (True, "1", "requeue 9\n"),  # stopped ahead of the limit or preempted: back in the queue
    (True, "0", ""),  # HPSEARCH_REQUEUE=0
])  # fmt: skip
def test_the_task_requeues_itself_only_after_a_stop(
    tmp_path: Path, signalled: bool, requeue: str, calls: str
) -> None:
    """hpsearch and scontrol are stand-ins here (no Slurm, and the real stop path is the slow
    test above): a `hpsearch` that exits 0 on SIGTERM or after a while, as the real one does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n')
    ready = tmp_path / "ready"
    loops = 600 if signalled else 1  # a minute at most: a hang guard, never waited out
    (bin_dir / "fake-hpsearch").write_text(
        f"#!/bin/bash\ntrap 'exit 0' TERM\ntouch {ready}\n"
        f"for _ in $(seq {loops}); do sleep 0.1; done\n"
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HPSEARCH": "fake-hpsearch",
           "TMPDIR": str(tmp_path), "HPSEARCH_STORAGE": "postgresql://h@db/h",
           "SLURM_JOB_ID": "9", "HPSEARCH_REQUEUE": requeue}  # fmt: skip
    task = subprocess.Popen(["bash", str(SCRIPT), "s.yaml"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 30
    while signalled and not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if signalled:
        task.send_signal(signal.SIGTERM)
    out, _ = task.communicate(timeout=60)
    assert task.returncode == 0, out
    recorded = tmp_path / "calls"
    assert (recorded.read_text() if recorded.exists() else "") == calls
