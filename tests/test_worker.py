"""Workers on real databases and real processes: exact budget, crashes, signals, lost connections.

Each "machine" is an `hpsearch run` process (or a group of them); the databases are the real
PostgreSQL and MariaDB servers of this machine, and a SQLite file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

import hpsearch
from hpsearch.cli import main
from hpsearch.study import STOP_ATTR, read_attr

# Real processes and real training: minutes in all, so not in `make test-fast`.
pytestmark = pytest.mark.slow

FAST_HEARTBEAT = "workers: {heartbeat_interval: 1, grace_period: 3, max_retries: 2}"


def _worker(
    path: Path, url: str, *extra: str, hostname: str | None = None
) -> subprocess.Popen[str]:
    """One `hpsearch run` process; `hostname` runs it in its own UTS namespace (another host)."""
    argv = [sys.executable, "-m", "hpsearch", "run", str(path), "--storage", url, "-q", *extra]
    if hostname is not None:
        argv = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _objective(path: Path, function: str) -> Path:
    """The study with another function of conftest.OBJECTIVE_PY for its objective (and the
    function's own keys, `"meet, workers: 2"`) in place of `quadratic`."""
    text = path.read_text()
    assert "objective.py:quadratic" in text
    path.write_text(text.replace("objective.py:quadratic", f"objective.py:{function}"))
    return path


def _rendezvous(path: Path, tmp_path: Path, workers: int) -> Path:
    """The study with `meet` for its objective: no trial ends before `workers` worker processes
    have each started one, so the work is surely shared (conftest.OBJECTIVE_PY)."""
    folder = tmp_path / "rendezvous"
    folder.mkdir()
    return _objective(path, f"meet, folder: {folder}, workers: {workers}")


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _states(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _wait_all(processes: list[subprocess.Popen[str]], timeout: float = 180) -> list[str]:
    outputs = []
    for p in processes:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_eight_workers_run_exactly_the_budget(
    request: pytest.FixtureRequest, quadratic_study: Callable[..., Path], unique_name: str,
    server: str, tmp_path: Path,
) -> None:  # fmt: skip
    url = request.getfixturevalue(f"{server}_url")
    path = quadratic_study(
        n_trials=40, sleep=0.05, extra="enqueue: [{x: 2.0}, {x: -1.0}, {x: 3.5}]"
    )
    path = _rendezvous(path, tmp_path, workers=2)
    _wait_all([_worker(path, url) for _ in range(8)])
    trials = _trials(url, unique_name)
    assert len(trials) == 40, _states(trials)
    assert _states(trials) == {"COMPLETE": 40}
    # Enqueued settings ran first and exactly once, however many workers started together.
    xs = [t.params["x"] for t in trials]
    for x in (2.0, -1.0, 3.5):
        assert xs.count(x) == 1
    assert sorted(t.number for t in trials if t.params["x"] in (2.0, -1.0, 3.5)) == [0, 1, 2]
    assert len({t.user_attrs["worker"] for t in trials}) > 1  # the work was shared


@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_eight_workers_train_exactly_the_epoch_budget(
    request: pytest.FixtureRequest, write_study: Callable[..., Path], unique_name: str,
    server: str, tmp_path: Path,
) -> None:  # fmt: skip
    """`budget: {epochs: 40}`: every reported step claims one, in the transaction that records
    it, so eight workers record 40 epochs in all, not 40 plus what was in flight."""
    url = request.getfixturevalue(f"{server}_url")
    path = write_study(f"""
        name: {unique_name}
        metric: loss
        sampler: {{type: random, seed: 2}}
        pruner: {{type: none}}
        budget: {{epochs: 40}}
        objective: {{function: objective.py:quadratic, sleep: 0.05}}
        search_space: {{x: {{type: float, low: -5, high: 5}}}}
    """)  # fmt: skip
    path = _rendezvous(path, tmp_path, workers=2)
    _wait_all([_worker(path, url) for _ in range(8)])
    trials = _trials(url, unique_name)
    assert sum(len(t.intermediate_values) for t in trials) == 40
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    cut = [t for t in trials if t.user_attrs.get("prune_reason") == "budget.epochs spent"]
    assert all(t.state == TrialState.PRUNED for t in cut)
    assert len({t.user_attrs["worker"] for t in trials}) > 1


def test_local_workers_share_a_sqlite_study(
    quadratic_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'local.db'}"
    # At the rendezvous: the first worker could otherwise run all 12 before the third joined.
    path = _rendezvous(quadratic_study(n_trials=12, sleep=0.05), tmp_path, workers=3)
    assert main(["run", str(path), "--storage", url, "--workers", "3", "-q"]) == 0
    trials = _trials(url, unique_name)
    assert _states(trials) == {"COMPLETE": 12}
    assert len({t.user_attrs["worker"] for t in trials}) == 3


def test_sqlite_workers_run_each_enqueued_trial_once_within_an_exact_budget(
    quadratic_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    """SQLite takes no row locks; before `BEGIN IMMEDIATE` two workers started the same queued
    trial and the study ended short (11/16, 15/16 in three runs)."""
    enqueued = [round(0.1 * i, 1) for i in range(1, 9)]
    queue = ", ".join(f"{{x: {x}}}" for x in enqueued)
    path = quadratic_study(n_trials=16, sleep=0.05, extra=f"enqueue: [{queue}]")
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'race-{attempt}.db'}"
        assert main(["run", str(path), "--storage", url, "--workers", "4", "-q"]) == 0
        trials = _trials(url, unique_name)
        assert _states(trials) == {"COMPLETE": 16}, attempt
        assert sorted(t.number for t in trials) == list(range(16))
        ran = [t.params["x"] for t in trials if t.params["x"] in enqueued]
        assert sorted(ran) == enqueued, attempt  # each queued trial ran exactly once


def test_sigkilled_worker_loses_nothing(
    postgres_url: str, quadratic_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()  # the victim's trial runs until it is killed, however slow the machine
    path = _objective(quadratic_study(n_trials=6, extra=FAST_HEARTBEAT), f"hold, hold: {hold}")
    victim = _worker(path, postgres_url)
    (killed,) = _wait_for_trials(postgres_url, unique_name, victim, "RUNNING")
    victim.kill()
    victim.wait()
    hold.unlink()
    survivor = _worker(path, postgres_url)
    _wait_all([survivor])
    trials = _trials(postgres_url, unique_name)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == TrialState.FAIL
    assert "stopped sending heartbeats" in by_number[killed.number].user_attrs["fail_reason"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == by_number[killed.number].params == killed.params
    # The retry took the crashed trial's place: the budget of 6 trials still finished.
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6


def _try_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return _trials(url, name)
    except KeyError:  # the study is not created yet
        return []


def _wait_for_trials(
    url: str, name: str, worker: subprocess.Popen[str], state: str, timeout: float = 120
) -> list[optuna.trial.FrozenTrial]:
    """The study's trials in `state` (with their parameters), once there is one; `timeout` only
    guards against a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [t for t in _try_trials(url, name) if t.state.name == state and t.params]
        if found:
            return found
        assert worker.poll() is None, worker.communicate()[0]
        time.sleep(0.2)
    raise AssertionError(f"no trial {state} after {timeout:g} s")


def test_sigterm_fails_and_requeues_the_running_trial_then_exits_zero(
    postgres_url: str, quadratic_study: Callable[..., Path], unique_name: str
) -> None:
    # The trial would run 10 minutes: a worker that waited for it would outlast the hang guard.
    path = quadratic_study(n_trials=3, sleep=600, extra=FAST_HEARTBEAT)
    worker = _worker(path, postgres_url)
    _wait_for_trials(postgres_url, unique_name, worker, "RUNNING")
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out
    trials = _trials(postgres_url, unique_name)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(failed) == 1
    assert failed[0].user_attrs["fail_reason"] == "worker stopped by SIGTERM"
    assert len(waiting) == 1
    assert waiting[0].params == failed[0].params
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_workers_survive_their_connections_being_cut(
    postgres_url: str, quadratic_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    """Every connection to the study's database is cut three times, each time while the
    workers surely have trials left: the next batch of 8 trials waits for the test."""
    gates = tmp_path / "gates"
    gates.mkdir()
    path = quadratic_study(n_trials=30, extra=FAST_HEARTBEAT)
    path = _objective(path, f"gated, folder: {gates}, every: 8")
    (gates / "gate-0").touch()
    workers = [_worker(path, postgres_url) for _ in range(3)]
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    database = sa.engine.make_url(postgres_url).database
    cut = 0
    for batch in (1, 2, 3):
        _wait_for_file(gates / f"trial-{8 * batch}", workers)  # a trial waits for this batch
        with engine.connect() as c:
            terminated = c.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            ).all()
        cut += bool(terminated)
        (gates / f"gate-{batch}").touch()
    engine.dispose()
    for batch in range(4, 10):  # retries of failed trials start later: let every one run
        (gates / f"gate-{batch}").touch()
    _wait_all(workers)
    trials = _trials(postgres_url, unique_name)
    assert cut == 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 30


def _wait_for_file(path: Path, workers: list[subprocess.Popen[str]], timeout: float = 120) -> None:
    """Until `path` exists; `timeout` only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path.name} after {timeout:g} s"
        assert any(w.poll() is None for w in workers), [w.communicate()[0] for w in workers]
        time.sleep(0.05)


def test_two_hosts_share_a_server_study_but_not_a_sqlite_file(
    postgres_url: str, quadratic_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    path = _rendezvous(quadratic_study(n_trials=8), tmp_path, workers=2)
    _wait_all([_worker(path, postgres_url, hostname=h) for h in ("gpu-node-a", "gpu-node-b")])
    trials = _trials(postgres_url, unique_name)
    assert {t.user_attrs["host"] for t in trials} == {"gpu-node-a", "gpu-node-b"}
    assert len(trials) == 8

    sqlite_url = f"sqlite:///{tmp_path / 'shared.db'}"
    _wait_all([_worker(path, sqlite_url, "--n-trials", "2", hostname="gpu-node-a")])
    other = _worker(path, sqlite_url, "--n-trials", "2", hostname="gpu-node-b")
    out, _ = other.communicate(timeout=60)
    assert other.returncode == 2
    assert "SQLite serves one machine" in out
    assert "Traceback" not in out


def test_study_wide_timeout_stops_new_trials(
    quadratic_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    path = quadratic_study(n_trials=1000, sleep=0.3)  # 5 minutes without the timeout
    assert main(["run", str(path), "--storage", url, "--timeout", "2s", "-q"]) == 0
    trials = _trials(url, unique_name)
    # The clock starts with the first trial and each takes at least 0.3 s: at most 7 start
    # within 2 s on any machine (a slow one starts fewer), and at least the first one.
    assert 1 <= len(trials) <= 8
    assert not [t for t in trials if t.state == TrialState.RUNNING]


if os.environ.get("HPSEARCH_SKIP_UNSHARE"):  # pragma: no cover - containers without CAP_SYS_ADMIN
    test_two_hosts_share_a_server_study_but_not_a_sqlite_file = pytest.mark.skip(
        reason="unshare not permitted"
    )(test_two_hosts_share_a_server_study_but_not_a_sqlite_file)


def test_a_study_name_from_anywhere_is_one_safe_folder(tmp_path: Path) -> None:
    """`--name ../../x` (or a name Optuna allows) must not put checkpoints outside artifacts/."""
    from hpsearch.worker.provenance import folder_name

    for name in ("../../x", "/etc/x", "a/b", ".", "..", "x\x00y"):
        folder = folder_name(name)
        assert "/" not in folder
        assert not folder.startswith(".")
        assert (tmp_path / folder).resolve().parent == tmp_path.resolve()
    assert folder_name("../x") != folder_name("._x")  # two names never share a folder
    assert folder_name("resnet50-lr") == "resnet50-lr"


def test_sigterm_while_a_worker_starts_is_a_clean_exit(
    quadratic_study: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM during the imports exited -15; while waiting for a database that is down the
    worker went on waiting for it (114 s) instead of giving up about 10 s after the signal."""
    path = quadratic_study(n_trials=2)
    early = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "--storage",
         f"sqlite:///{tmp_path / 'db.sqlite'}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # As soon as the CLI handles SIGTERM, before its imports of optuna, SQLAlchemy, pydantic;
    # earlier, Python's default action would end the process whatever hpsearch does.
    _wait_until_it_catches_sigterm(early.pid)
    early.send_signal(signal.SIGTERM)
    assert early.wait(timeout=120) == 0
    assert "stopped by SIGTERM" in early.communicate()[1]
    waiting = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "--storage",
         "postgresql+psycopg://nobody@127.0.0.1:1/db"],  # nothing listens: it waits
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert waiting.stderr is not None
    for line in waiting.stderr:
        if "waiting for storage" in line:
            break
    waiting.send_signal(signal.SIGTERM)
    # Its waits double from 1 s, so in the 10 s a stopping worker still tries (its clock) it
    # tries at most 4 more times, on a slow machine fewer; waiting its full 120 s, 14 times.
    # The hang guard too is far below those 120 s.
    _, rest = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, rest
    assert rest.count("waiting for storage") <= 5, rest
    assert "SIGTERM" in rest


def _wait_until_it_catches_sigterm(pid: int, timeout: float = 120) -> None:
    """Until process `pid` has a handler for SIGTERM (Linux: `SigCgt` in /proc/PID/status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        caught = int(next(line for line in status if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never handled SIGTERM")


def _in_mount_namespace(
    setup: str, argv: list[str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run `argv` after `setup` (mount commands) in a mount namespace of its own: a full or a
    read-only disk, for real, without touching the machine's mounts."""
    script = f'{setup} && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", *argv],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )  # fmt: skip


@pytest.mark.skipif(
    bool(os.environ.get("HPSEARCH_SKIP_UNSHARE")), reason="unshare not permitted here"
)
def test_a_full_disk_is_one_line_and_loses_nothing(
    write_study: Callable[..., Path], unique_name: str, tmp_path: Path
) -> None:
    """SQLite on a full disk retried for 3 minutes, then printed a page of traceback."""
    (tmp_path / "fill.py").write_text(
        "def f(params, report):\n"
        "    for step in range(400):\n"
        "        report({'value': params['x'] + step}, step)\n"
        "    return {'value': params['x']}\n"
    )
    path = write_study(f"""
        name: {unique_name}
        metric: value
        sampler: {{type: random, seed: 1}}
        pruner: {{type: none}}
        budget: {{n_trials: 200}}
        objective: {{function: fill.py:f}}
        search_space: {{x: {{type: float, low: 0, high: 1}}}}
    """)  # fmt: skip
    disk = tmp_path / "disk"
    disk.mkdir()
    url = f"sqlite:///{disk / 'db.sqlite'}"
    result = _in_mount_namespace(
        f"mount -t tmpfs -o size=400k tmpfs {disk}",
        [sys.executable, "-m", "hpsearch", "run", str(path), "--storage", url, "-q"], tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    # One line and no "retrying" warning (-q keeps warnings): the full disk was not retried.
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"hpsearch: error: storage {url} failed: database or disk is")
    assert f"free disk space on {disk}" in result.stderr


@pytest.mark.skipif(
    bool(os.environ.get("HPSEARCH_SKIP_UNSHARE")), reason="unshare not permitted here"
)
def test_status_reads_a_study_on_a_read_only_disk(
    quadratic_study: Callable[..., Path], tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    url = f"sqlite:///{disk / 'db.sqlite'}"
    path = quadratic_study(n_trials=2)
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    result = _in_mount_namespace(
        f"mount --bind -o ro {disk} {disk}",
        [sys.executable, "-m", "hpsearch", "status", str(path), "--storage", url, "--json"],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["trials"]["complete"] == 2


SLOW_OBJECTIVE = """
import time

def slow(params, report):
    for step in range(1, 60):
        time.sleep(0.2)
        report({"value": params["x"] * step}, step)
    return {"value": params["x"] * 60}
"""


def _slow_study(
    write_study: Callable[..., Path], name: str, extra: str = "", steps: int = 60
) -> Path:
    path = write_study(f"""
        name: {name}
        metric: value
        direction: maximize
        sampler: {{type: random, seed: 4}}
        pruner: {{type: none}}
        budget: {{n_trials: 40{extra}}}
        {FAST_HEARTBEAT}
        objective: {{function: slow.py:slow}}
        search_space: {{x: {{type: float, low: 0, high: 1}}}}
    """)  # fmt: skip
    (path.parent / "slow.py").write_text(SLOW_OBJECTIVE.replace("60", str(steps)))
    return path


def _wait_running(url: str, name: str, n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trials = _try_trials(url, name)
        if sum(t.state == TrialState.RUNNING for t in trials) >= n:
            return
        time.sleep(0.3)
    raise AssertionError(f"{n} trials never ran at once")


def test_hpsearch_stop_ends_a_four_worker_study_and_run_says_how_to_resume(
    postgres_url: str, write_study: Callable[..., Path], unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # A trial reports every 0.2 s for 10 minutes: the workers must hand theirs back at their
    # next step, as a fleet that waited for its trials to end would outlast every hang guard.
    path = _slow_study(write_study, unique_name, steps=3000)
    fleet = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "--storage", postgres_url,
         "--workers", "4", "-q"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    _wait_running(postgres_url, unique_name, 4)
    capsys.readouterr()
    assert main(["stop", str(path), "--storage", postgres_url, "--wait", "120"]) == 0
    assert "no trial is running: every worker has stopped" in capsys.readouterr().out
    assert fleet.wait(timeout=120) == 0, fleet.communicate()[0]
    trials = _trials(postgres_url, unique_name)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    handed_back = [t for t in trials if t.state == TrialState.FAIL]
    assert len(handed_back) == 4
    assert all(t.user_attrs["fail_reason"].startswith("study stopped: ") for t in handed_back)
    assert sum(t.state == TrialState.WAITING for t in trials) == 4  # retried on --resume
    study = optuna.load_study(study_name=unique_name, storage=postgres_url)
    assert read_attr(study, STOP_ATTR)["kind"] == "stop"
    capsys.readouterr()
    assert main(["run", str(path), "--storage", postgres_url]) == 0
    assert "--resume" in capsys.readouterr().err
    assert len(_trials(postgres_url, unique_name)) == len(trials)  # nothing ran


def test_budget_target_stops_every_worker_once_reached(
    postgres_url: str, write_study: Callable[..., Path], unique_name: str
) -> None:
    path = _slow_study(write_study, unique_name, extra=", target: 30")
    (path.parent / "slow.py").write_text(
        SLOW_OBJECTIVE.replace("range(1, 60)", "range(1, 3 if params['x'] > 0.5 else 60)")
    )
    fleet = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "--storage", postgres_url,
         "--workers", "4", "-q"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert fleet.wait(timeout=120) == 0, fleet.communicate()[0]
    trials = _trials(postgres_url, unique_name)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    best = max(t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None)
    assert best >= 30
    assert len(trials) < 40  # stopped well before the budget
    study = optuna.load_study(study_name=unique_name, storage=postgres_url)
    record = read_attr(study, STOP_ATTR)
    assert record["kind"] == "target"
    assert record["reason"].startswith("budget.target reached: value ")


def test_a_lingering_worker_exits_soon_after_the_last_trial(
    quadratic_study: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose budget is spent while another's trial runs lingers (that trial may crash
    and need a retry); it used to look again only every 5 s, so a fleet ended seconds after its
    last trial. It now looks after 0.05 s, then twice as long each time up to the poll: the
    schedule is asserted, not the machine's speed."""
    url = f"sqlite:///{tmp_path / 'linger.db'}"
    path = quadratic_study(n_trials=2)
    other = hpsearch.create_study(path, storage=url)
    running = other.ask()  # another worker's trial: RUNNING, beating, slot 1 of 2
    waits: list[float] = []

    def others_trial_ends() -> None:
        deadline = time.monotonic() + 120  # hang guard only
        while len(waits) < 5 and time.monotonic() < deadline:
            found = (
                re.search(r"looking again in ([\d.]+)s", r.getMessage()) for r in caplog.records[:]
            )
            waits[:] = [float(m.group(1)) for m in found if m]
            time.sleep(0.01)
        other.tell(running, 1.0)

    thread = threading.Thread(target=others_trial_ends)
    thread.start()
    with caplog.at_level(logging.DEBUG, logger="hpsearch"):
        study = hpsearch.run(path, storage=url)  # runs slot 2, then lingers
    thread.join()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert waits[:5] == [0.05, 0.1, 0.2, 0.4, 0.8]  # not the 5 s poll from the start
